"""Request bodies from the tutorial this project grows from (../shared/seed/triggering-pipelines-tutorial.md)."""

# The bodies of its curl examples, verbatim: its custom API's /trigger and /trigger-template, and ZenML's
# own POST /api/v1/run_templates/<TEMPLATE_ID>/runs.
TUTORIAL_TRIGGER = """{
    "pipeline_name": "training_pipeline",
    "steps": {
      "load_data": {
        "parameters": {
          "data_url": "s3://some-bucket/new-data.csv"
        }
      },
      "train_model": {
        "parameters": {
          "model_type": "gradient_boosting"
        }
      }
    }
  }"""
TUTORIAL_TEMPLATE = """{
    "template_id": "YOUR_TEMPLATE_ID",
    "steps": {
      "load_data": {
        "parameters": {
          "data_url": "s3://some-bucket/new-data.csv"
        }
      },
      "train_model": {
        "parameters": {
          "model_type": "gradient_boosting"
        }
      }
    }
  }"""
ZENML_REST = """{
    "steps": {
      "load_data": {
        "parameters": {
          "data_url": "s3://production-bucket/latest-data.csv"
        }
      },
      "train_model": {
        "parameters": {
          "model_type": "gradient_boosting"
        }
      }
    }
  }"""

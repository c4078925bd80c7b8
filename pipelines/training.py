"""The tutorial's training pipeline, typed precisely so bad values fail before a run."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from zenml import pipeline, step

from pipelines.data import DataUrl, local_csv_path, open_regular_file

ModelType = Literal["random_forest", "gradient_boosting"]
Model = Union[RandomForestClassifier, GradientBoostingClassifier]  # noqa: UP007 - ZenML resolves typing.Union outputs
DEFAULT_DATA_URL = "s3://example-bucket/data.csv"

# Bounds on what a request may ask for, so no request can hang a worker or exhaust its memory.
# Measured worst case: a 1000-tree random forest on 10k noisy synthetic rows trains in about
# 20 s and pickles to about 350 MB; at 100k rows it would be about 7 min and 3.5 GB, over the
# worker's default TRIGGER_MEMORY_LIMIT_MB.
Estimators = Annotated[int, Field(ge=1, le=1000)]
"""Forests rarely gain past a few hundred trees; more only add time and model size (sklearn sets no limit)."""
Samples = Annotated[int, Field(ge=100, le=10_000)]
"""At least 100 rows, so both classes reach both splits; at most 10x the tutorial's 1000."""
HeldOutShare = Annotated[float, Field(ge=0.05, le=0.5)]
"""Below 5% the score is noise; above half the model starves."""
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""The range numpy and scikit-learn accept as a seed or `random_state`."""


def synthetic_data(n_samples: int, seed: int) -> pd.DataFrame:
    """The tutorial's synthetic data set, seeded so runs are comparable."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "feature_1": rng.normal(0, 1, n_samples),
            "feature_2": rng.normal(0, 1, n_samples),
            "feature_3": rng.normal(0, 1, n_samples),
            "target": rng.choice([0, 1], n_samples),
        }
    )


@step
def load_data(data_url: DataUrl, n_samples: Samples = 1000, seed: Seed = 42) -> pd.DataFrame:
    """Read a local CSV (with a `target` column), or simulate data for remote URLs."""
    path = local_csv_path(data_url)
    if path is None:
        return synthetic_data(n_samples, seed)
    with open_regular_file(path) as file:
        data = pd.read_csv(file)
    if "target" not in data.columns:
        raise ValueError(f"{data_url}: CSV has no 'target' column")
    return data


@step
def preprocess(data: pd.DataFrame, test_size: HeldOutShare = 0.2) -> dict[str, Any]:
    """Split data into train and test sets."""
    features = data.drop(columns="target")
    x_train, x_test, y_train, y_test = train_test_split(features, data["target"], test_size=test_size, random_state=42)
    return {"X_train": x_train, "X_test": x_test, "y_train": y_train, "y_test": y_test}


@step
def train_model(
    datasets: dict[str, Any],
    model_type: ModelType = "random_forest",
    n_estimators: Estimators = 100,
    random_state: Seed = 42,
) -> Model:
    """Train the chosen scikit-learn classifier."""
    if model_type == "random_forest":
        model: Model = RandomForestClassifier(n_estimators=n_estimators, random_state=random_state)
    else:
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=random_state)
    model.fit(datasets["X_train"], datasets["y_train"])
    return model


@step
def evaluate(datasets: dict[str, Any], model: Model) -> dict[str, float]:
    """Score the model on the held-out split; the worker records this as the run's metrics."""
    predictions = model.predict(datasets["X_test"])
    return {"accuracy": float(accuracy_score(datasets["y_test"], predictions))}


@pipeline(enable_cache=False)
def training_pipeline(data_url: DataUrl = DEFAULT_DATA_URL, model_type: ModelType = "random_forest") -> None:
    """A configurable training pipeline that external systems trigger."""
    data = load_data(data_url)
    datasets = preprocess(data)
    model = train_model(datasets, model_type)
    evaluate(datasets, model)

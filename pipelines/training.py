"""The tutorial's training pipeline, typed precisely so bad values fail before a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from zenml import pipeline, step

ModelType = Literal["random_forest", "gradient_boosting"]
Model = Union[RandomForestClassifier, GradientBoostingClassifier]  # noqa: UP007 - ZenML resolves typing.Union outputs
DEFAULT_DATA_URL = "s3://example-bucket/data.csv"


def local_csv_path(data_url: str) -> Path | None:
    """The local file a `data_url` names, or None when it is remote (then simulated)."""
    parsed = urlparse(data_url)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "" and data_url:
        return Path(data_url)
    return None


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
def load_data(data_url: str, n_samples: int = 1000, seed: int = 42) -> pd.DataFrame:
    """Read a local CSV (with a `target` column), or simulate data for remote URLs."""
    path = local_csv_path(data_url)
    if path is None:
        return synthetic_data(n_samples, seed)
    data = pd.read_csv(path)
    if "target" not in data.columns:
        raise ValueError(f"{data_url}: CSV has no 'target' column")
    return data


@step
def preprocess(data: pd.DataFrame, test_size: float = 0.2) -> dict[str, Any]:
    """Split data into train and test sets."""
    features = data.drop(columns="target")
    x_train, x_test, y_train, y_test = train_test_split(features, data["target"], test_size=test_size, random_state=42)
    return {"X_train": x_train, "X_test": x_test, "y_train": y_train, "y_test": y_test}


@step
def train_model(
    datasets: dict[str, Any],
    model_type: ModelType = "random_forest",
    n_estimators: int = 100,
    random_state: int = 42,
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
def training_pipeline(data_url: str = DEFAULT_DATA_URL, model_type: ModelType = "random_forest") -> None:
    """A configurable training pipeline that external systems trigger."""
    data = load_data(data_url)
    datasets = preprocess(data)
    model = train_model(datasets, model_type)
    evaluate(datasets, model)

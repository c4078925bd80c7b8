"""Drift detection: its error rates on seeded data, its rule, its input checks and its report."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

import producers.drift as drift
from producers.drift import DriftDetector, DriftInputError, DriftReport, DriftSettings, DriftThresholds, FeatureDrift

SEEDS = 200
ROWS = 1_000
FEATURES = [f"f{i}" for i in range(10)]
SHIFTED = "f3"


def normal_frame(rng: np.random.Generator, rows: int = ROWS, shift: float = 0.0) -> pd.DataFrame:
    """Ten standard normal features; `shift` (in sigmas) is added to the mean of `SHIFTED`."""
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    frame[SHIFTED] += shift
    return frame


def rate(seeds: int, outcome: Callable[[np.random.Generator], bool]) -> float:
    """Share of seeds for which `outcome` holds."""
    return sum(outcome(np.random.default_rng(seed)) for seed in range(seeds)) / seeds


def categorical_frame(rng: np.random.Generator, shares: dict[str, float], rows: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame({"plan": rng.choice(list(shares), size=rows, p=list(shares.values()))})


def check(reference: pd.DataFrame, current: pd.DataFrame, **fit: object) -> DriftReport:
    return DriftDetector.fit(reference, **fit).check(current)  # type: ignore[arg-type]


# --- statistical properties -------------------------------------------------------------------


def test_false_alarm_rate_without_drift_is_at_most_five_percent() -> None:
    def alarmed(rng: np.random.Generator) -> bool:
        return check(normal_frame(rng), normal_frame(rng)).drifted

    assert rate(SEEDS, alarmed) <= 0.05


def test_half_sigma_mean_shift_in_one_feature_is_found_and_attributed() -> None:
    found: list[tuple[str, ...]] = []

    def detected(rng: np.random.Generator) -> bool:
        report = check(normal_frame(rng), normal_frame(rng, shift=0.5))
        found.append(report.drifted_features)
        return report.drifted and SHIFTED in report.drifted_features

    assert rate(SEEDS, detected) >= 0.95
    assert sum(names == (SHIFTED,) for names in found) / SEEDS >= 0.95


def test_categorical_shift_is_found_and_equal_shares_are_not() -> None:
    rng = np.random.default_rng(7)
    before = {"free": 0.5, "pro": 0.3, "team": 0.2}
    reference = categorical_frame(rng, before)
    same = check(reference, categorical_frame(rng, before)).features[0]
    shifted = check(reference, categorical_frame(rng, {"free": 0.3, "pro": 0.3, "team": 0.4})).features[0]
    assert shifted.kind == "categorical" and shifted.drifted and shifted.p_value < 1e-6
    assert not same.drifted and same.psi < 0.05


def test_a_category_the_reference_never_saw_counts() -> None:
    rng = np.random.default_rng(8)
    reference = categorical_frame(rng, {"free": 0.5, "pro": 0.5})
    current = categorical_frame(rng, {"free": 0.35, "pro": 0.35, "enterprise": 0.3})
    result = check(reference, current).features[0]
    assert result.drifted and result.psi >= 1.0 and result.p_value < 1e-6


# --- the rule and the settings ----------------------------------------------------------------


def one_feature(rng: np.random.Generator, rows: int, shift: float) -> pd.DataFrame:
    return pd.DataFrame({"x": rng.normal(loc=shift, size=rows)})


def test_a_rejecting_test_alone_is_drift() -> None:
    rng = np.random.default_rng(1)
    result = check(one_feature(rng, 100_000, 0.0), one_feature(rng, 100_000, 0.05)).features[0]
    assert result.psi < 0.2 and result.p_value < 0.01
    assert result.drifted


def test_psi_at_the_threshold_alone_is_drift() -> None:
    rng = np.random.default_rng(2)
    reference, current = one_feature(rng, ROWS, 0.0), one_feature(rng, ROWS, 0.1)
    low = check(reference, current, settings=DriftSettings(psi_threshold=0.01)).features[0]
    high = check(reference, current, settings=DriftSettings(psi_threshold=0.5)).features[0]
    assert low.p_value >= 0.01 and 0.01 <= low.psi < 0.5
    assert low.drifted and not high.drifted


def test_settings_come_from_trigger_drift_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_DRIFT_PSI_THRESHOLD", "0.3")
    monkeypatch.setenv("TRIGGER_DRIFT_P_VALUE", "0.05")
    monkeypatch.setenv("TRIGGER_DRIFT_BINS", "5")
    rng = np.random.default_rng(3)
    report = check(normal_frame(rng), normal_frame(rng))
    assert report.thresholds == DriftThresholds(
        psi_threshold=0.3, p_value=0.05, correction="bonferroni", alpha=0.005, bins=5
    )


@pytest.mark.parametrize(("correction", "alpha"), [("bonferroni", 0.001), ("none", 0.01)])
def test_correction_sets_the_per_feature_alpha(correction: str, alpha: float) -> None:
    rng = np.random.default_rng(4)
    settings = DriftSettings(correction=correction)  # type: ignore[arg-type]
    assert check(normal_frame(rng), normal_frame(rng), settings=settings).thresholds.alpha == pytest.approx(alpha)


def test_threads_give_the_same_report_as_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    detector = DriftDetector.fit(normal_frame(rng))
    current = normal_frame(rng, shift=0.2)
    monkeypatch.setattr(drift, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(drift, "_cpus", lambda: 2)
    threaded = detector.check(current)
    monkeypatch.setattr(drift, "_cpus", lambda: 1)
    assert detector.check(current) == threaded


# --- kinds and missing values -----------------------------------------------------------------


def test_kinds_follow_dtype_or_the_categorical_argument() -> None:
    frame = pd.DataFrame(
        {
            "amount": [1.5, 2.5, 3.5, 4.5],
            "count": [1, 2, 3, 4],
            "flag": [True, False, True, False],
            "plan": pd.Categorical(["a", "b", "a", "b"]),
            "city": ["x", "y", "x", "y"],
        }
    )
    report = check(frame, frame, categorical=["count"])
    kinds = {f.name: f.kind for f in report.features}
    assert kinds == {
        "amount": "numeric",
        "count": "categorical",
        "flag": "categorical",
        "plan": "categorical",
        "city": "categorical",
    }


def test_missing_values_are_counted_and_left_out_of_the_tests() -> None:
    values = np.arange(100, dtype=float)
    reference = pd.DataFrame({"x": np.concatenate([values, [np.nan] * 5]), "c": ["a", "b"] * 50 + [None] * 5})
    current = pd.DataFrame(
        {"x": np.concatenate([[np.nan] * 7, values, [np.nan] * 3]), "c": [None] * 10 + ["a", "b"] * 50}
    )
    x, c = check(reference, current).features
    assert (x.nan_reference, x.nan_current, c.nan_reference, c.nan_current) == (5, 10, 5, 10)
    assert x.statistic == 0 and x.psi == 0 and not x.drifted
    assert c.psi == 0 and not c.drifted


def test_nullable_integers_with_missing_values_are_numeric() -> None:
    frame = pd.DataFrame({"n": pd.array([1, 2, None, 4, 5], dtype="Int64")})
    result = check(frame, frame).features[0]
    assert (result.kind, result.nan_reference, result.nan_current) == ("numeric", 1, 1)


# --- bad input --------------------------------------------------------------------------------

BASE = pd.DataFrame({"age": [30.0, 40.0, 50.0], "plan": ["a", "b", "a"]})


def raises_for(column: object, call: Callable[[], object]) -> DriftInputError:
    """`call` raises DriftInputError for `column`, naming it in the message."""
    with pytest.raises(DriftInputError, match=repr(column)) as caught:
        call()
    assert caught.value.column == column
    return caught.value


def test_a_column_missing_from_current_is_named() -> None:
    raises_for("plan", lambda: check(BASE, BASE[["age"]]))


def test_a_feature_missing_from_current_is_named_when_features_are_given() -> None:
    reference = BASE.assign(score=[1.0, 2.0, 3.0])
    detector = DriftDetector.fit(reference, features=["age", "score"])
    raises_for("score", lambda: detector.check(reference[["age", "plan"]]))


def test_reference_columns_outside_features_may_be_absent_or_present() -> None:
    detector = DriftDetector.fit(BASE, features=["age"])
    assert detector.check(BASE[["age"]]).features == detector.check(BASE).features


def test_an_extra_column_in_current_is_named() -> None:
    raises_for("region", lambda: check(BASE, BASE.assign(region=["n", "s", "e"])))


def test_a_feature_not_in_the_reference_is_named() -> None:
    raises_for("income", lambda: DriftDetector.fit(BASE, features=["age", "income"]))


def test_a_categorical_name_outside_the_features_is_named() -> None:
    raises_for("plan", lambda: DriftDetector.fit(BASE, features=["age"], categorical=["plan"]))


@pytest.mark.parametrize("side", ["reference", "current"])
def test_an_empty_frame_is_refused(side: str) -> None:
    empty = BASE.iloc[0:0]
    frames = (empty, BASE) if side == "reference" else (BASE, empty)
    with pytest.raises(DriftInputError, match=f"the {side} frame is empty"):
        check(*frames)


@pytest.mark.parametrize("side", ["reference", "current"])
@pytest.mark.parametrize("column", ["age", "plan"])
def test_an_all_missing_column_is_named(side: str, column: str) -> None:
    blank = BASE.assign(**{column: pd.Series([None] * 3, dtype=BASE[column].dtype)})
    frames = (blank, BASE) if side == "reference" else (BASE, blank)
    error = raises_for(column, lambda: check(*frames))
    assert f"only missing values in the {side} frame" in str(error)


def test_a_column_whose_kind_changed_is_named() -> None:
    error = raises_for("age", lambda: check(BASE, BASE.assign(age=["30", "40", "50"])))
    assert "categorical in the current frame but numeric in the reference" in str(error)


def test_a_numeric_column_that_became_boolean_is_named() -> None:
    raises_for("age", lambda: check(BASE, BASE.assign(age=[True, False, True])))


def test_an_unsupported_dtype_is_named() -> None:
    frame = BASE.assign(seen=pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]))
    raises_for("seen", lambda: DriftDetector.fit(frame))


def test_a_duplicated_column_is_named() -> None:
    raises_for("age", lambda: DriftDetector.fit(pd.concat([BASE, BASE[["age"]]], axis=1)))


def test_a_non_frame_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        DriftDetector.fit({"age": [1.0]})  # type: ignore[arg-type]


# --- the report -------------------------------------------------------------------------------


def test_report_counts_rows_and_shares() -> None:
    rng = np.random.default_rng(6)
    report = check(normal_frame(rng, rows=800), normal_frame(rng, rows=1200, shift=1.0))
    assert (report.rows_reference, report.rows_current) == (800, 1200)
    assert report.drifted_features == (SHIFTED,) and report.drifted_share == pytest.approx(0.1)
    dumped = json.loads(report.model_dump_json())
    assert dumped["drifted"] is True and len(dumped["features"]) == 10


def many_drifted(count: int) -> DriftReport:
    """A report of `count` drifted features with long names, PSI rising with the index."""
    features = tuple(
        FeatureDrift(
            name=f"feature_{i:04d}_" + "x" * 100,
            kind="numeric",
            statistic=0.5,
            p_value=1e-30 / (i + 1),
            psi=i / 100,
            drifted=True,
            nan_reference=0,
            nan_current=0,
        )
        for i in range(count)
    )
    thresholds = DriftThresholds(psi_threshold=0.2, p_value=0.01, correction="bonferroni", alpha=2e-5, bins=10)
    return DriftReport(features=features, rows_reference=10, rows_current=10, thresholds=thresholds)


def test_summary_of_500_drifted_features_stays_small_and_keeps_the_worst() -> None:
    summary = many_drifted(500).summary()
    assert len(json.dumps(summary).encode()) < 4096
    assert summary["drifted_count"] == 500 and summary["left_out"] == 490 and len(summary["top"]) == 10
    assert summary["top"][0] == {"name": "feature_0499_" + "x" * 50 + "…", "psi": 4.99, "p_value": 2e-33}
    assert [entry["psi"] for entry in summary["top"]] == sorted(
        (entry["psi"] for entry in summary["top"]), reverse=True
    )


def test_summary_without_drift() -> None:
    rng = np.random.default_rng(9)
    summary = check(normal_frame(rng), normal_frame(rng)).summary()
    assert summary == {
        "drifted": False,
        "share": 0.0,
        "features": 10,
        "drifted_count": 0,
        "rows": {"reference": ROWS, "current": ROWS},
        "top": [],
        "left_out": 0,
    }

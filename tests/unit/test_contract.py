"""The wire contract: one frozen model, one decode point, every failure a MalformedRequest keeping the raw bytes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from producers.cli import cli
from producers.contract import (
    StepOverride,
    TriggerRequest,
    decode_request,
    encode_request,
    normalize_steps,
    peek_request_id,
    problems_from_validation,
)
from producers.errors import InvalidRequest, MalformedRequest, PermanentError


def paths(exc: MalformedRequest) -> set[str]:
    return {problem.path for problem in exc.details}


class TestTriggerRequest:
    def test_is_frozen(self) -> None:
        request = TriggerRequest(pipeline_name="training_pipeline")
        with pytest.raises(ValidationError):
            request.pipeline_name = "other"  # type: ignore[misc]
        assert request.pipeline_name == "training_pipeline"

    def test_step_override_is_frozen(self) -> None:
        override = StepOverride(parameters={"n_estimators": 10})
        with pytest.raises(ValidationError):
            override.parameters = {}  # type: ignore[misc]

    def test_unknown_field_is_forbidden(self) -> None:
        with pytest.raises(ValidationError) as info:
            TriggerRequest(pipeline_name="training_pipeline", run_now=True)  # type: ignore[call-arg]
        assert [error["type"] for error in info.value.errors()] == ["extra_forbidden"]
        assert info.value.errors()[0]["loc"] == ("run_now",)

    def test_unknown_field_inside_a_step_is_forbidden(self) -> None:
        with pytest.raises(ValidationError) as info:
            TriggerRequest(pipeline_name="p", steps={"train_model": {"params": {"a": 1}}})
        assert info.value.errors()[0]["loc"] == ("steps", "train_model", "params")

    @pytest.mark.parametrize(
        "fields",
        [{}, {"pipeline_name": "training_pipeline", "template": "nightly"}],
        ids=["neither", "both"],
    )
    def test_exactly_one_target(self, fields: dict[str, str]) -> None:
        with pytest.raises(ValidationError, match="exactly one of 'pipeline_name' or 'template'"):
            TriggerRequest(**fields)

    def test_template_alone_is_a_target(self) -> None:
        request = TriggerRequest(template="nightly")
        assert request.pipeline_name is None
        assert request.target == "template:nightly"

    def test_defaults(self) -> None:
        request = TriggerRequest(pipeline_name="training_pipeline")
        assert request.schema_version == 2
        assert request.request_id
        assert request.created_at.tzinfo is not None
        assert request.target == "training_pipeline"
        assert TriggerRequest(pipeline_name="p").request_id != request.request_id

    def test_naive_created_at_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as info:
            TriggerRequest(pipeline_name="p", created_at=datetime(2026, 11, 24, 14, 0))
        assert info.value.errors()[0]["loc"] == ("created_at",)

    def test_other_schema_version_is_rejected(self) -> None:
        with pytest.raises(ValidationError) as info:
            TriggerRequest(pipeline_name="p", schema_version=3)  # type: ignore[arg-type]
        assert info.value.errors()[0]["loc"] == ("schema_version",)

    @pytest.mark.parametrize("name", ["os.system; rm -rf /", "a b", ""])
    def test_pipeline_name_pattern(self, name: str) -> None:
        with pytest.raises(ValidationError):
            TriggerRequest(pipeline_name=name)

    def test_step_parameters_is_the_plain_form(self) -> None:
        request = TriggerRequest(pipeline_name="p", steps={"train_model": {"parameters": {"n_estimators": 10}}})
        assert request.step_parameters() == {"train_model": {"n_estimators": 10}}


class TestDecode:
    def test_round_trip(self) -> None:
        request = TriggerRequest(
            pipeline_name="training_pipeline",
            parameters={"data_url": "s3://bucket/new.csv"},
            steps=normalize_steps({"train_model": {"model_type": "gradient_boosting", "n_estimators": 10}}),
            idempotency_key="drift:churn-model:2026-11-24",
            source="drift-monitor",
            metadata={"drift": {"psi": 0.31}, "users": [1, 2]},
            created_at=datetime(2026, 11, 24, 14, 0, 0, 123456, tzinfo=timezone.utc),
        )
        wire = encode_request(request)
        assert decode_request(wire) == request
        assert decode_request(wire.encode()) == request

    def test_encoding_omits_unset_optionals_and_follows_zenml_shape(self) -> None:
        request = TriggerRequest(pipeline_name="p", steps=normalize_steps({"train_model": {"n_estimators": 10}}))
        data = json.loads(encode_request(request))
        assert "template" not in data
        assert "idempotency_key" not in data
        assert data["schema_version"] == 2
        assert data["steps"] == {"train_model": {"parameters": {"n_estimators": 10}}}

    def test_bad_utf8_bytes(self) -> None:
        raw = b'{"pipeline_name": "\xff\xfe"}'
        with pytest.raises(MalformedRequest) as info:
            decode_request(raw)
        assert info.value.raw == raw
        assert paths(info.value) == {""}
        assert "not valid UTF-8 JSON" in info.value.details[0].problem

    def test_not_json(self) -> None:
        with pytest.raises(MalformedRequest) as info:
            decode_request(b"run training please")
        assert info.value.raw == b"run training please"
        assert "not valid UTF-8 JSON" in str(info.value)

    def test_json_array(self) -> None:
        with pytest.raises(MalformedRequest) as info:
            decode_request(b'["training_pipeline"]')
        assert info.value.raw == b'["training_pipeline"]'
        assert info.value.details[0].problem == "expected a JSON object, got list"

    def test_wrong_field_types_are_all_reported_with_paths(self) -> None:
        raw = json.dumps(
            {
                "pipeline_name": 5,
                "parameters": ["data_url"],
                "steps": {"train_model": {"parameters": "n_estimators=10"}},
                "source": 1,
                "surprise": True,
            }
        )
        with pytest.raises(MalformedRequest) as info:
            decode_request(raw)
        assert info.value.raw == raw
        assert paths(info.value) == {
            "pipeline_name",
            "parameters",
            "steps.train_model.parameters",
            "source",
            "surprise",
        }

    def test_is_a_permanent_invalid_request(self) -> None:
        with pytest.raises(MalformedRequest) as info:
            decode_request(b"{}")
        assert isinstance(info.value, InvalidRequest)
        assert isinstance(info.value, PermanentError)
        assert info.value.as_dict()["type"] == "MalformedRequest"


class TestNormalizeSteps:
    def test_short_form(self) -> None:
        steps = normalize_steps({"train_model": {"model_type": "gradient_boosting"}})
        assert steps == {"train_model": StepOverride(parameters={"model_type": "gradient_boosting"})}

    def test_wire_form(self) -> None:
        steps = normalize_steps({"train_model": {"parameters": {"n_estimators": 10}}})
        assert steps == {"train_model": StepOverride(parameters={"n_estimators": 10})}

    def test_step_override_passes_through_and_none_is_empty(self) -> None:
        override = StepOverride(parameters={"a": 1})
        assert normalize_steps({"s": override})["s"] is override
        assert normalize_steps(None) == {}

    def test_parameters_alongside_other_keys_is_the_short_form(self) -> None:
        steps = normalize_steps({"s": {"parameters": {"a": 1}, "b": 2}})
        assert steps["s"].parameters == {"parameters": {"a": 1}, "b": 2}


class TestPeekRequestId:
    def test_reads_a_valid_id_from_an_invalid_request(self) -> None:
        assert peek_request_id(b'{"request_id": "abc-123", "pipeline_name": 5}') == "abc-123"

    @pytest.mark.parametrize(
        "raw",
        [
            b"\xff\xfe\x00",
            b"not json",
            b'["abc"]',
            b'{"request_id": 7}',
            b'{"request_id": ""}',
            b'{"request_id": "has spaces"}',
            json.dumps({"request_id": "x" * 129}).encode(),
        ],
    )
    def test_unreadable_or_unsafe_ids_give_none(self, raw: bytes) -> None:
        assert peek_request_id(raw) is None


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_non_finite_floats_do_not_silently_become_null(value: float) -> None:
    try:
        request = TriggerRequest(pipeline_name="p", parameters={"threshold": value})
    except ValidationError:
        return
    assert decode_request(encode_request(request)).parameters["threshold"] is not None


class TestErrorPaths:
    """A value that does not fit is reported at its full path, without `JsonValue`'s union tag (`.float`)."""

    def test_normalize_steps_locates_a_bad_value_from_the_request_root(self) -> None:
        with pytest.raises(ValidationError) as info:
            normalize_steps({"train_model": {"n_estimators": float("inf")}})
        [error] = info.value.errors()
        assert error["loc"] == ("steps", "train_model", "parameters", "n_estimators")
        assert error["type"] == "finite_number" and error["msg"] == "Input should be a finite number"

    def test_nested_values_keep_keys_and_indexes_but_lose_tags(self) -> None:
        with pytest.raises(ValidationError) as info:
            normalize_steps({"s": {"parameters": {"grid": [1, {"depth": float("nan")}]}}})
        assert problems_from_validation(info.value)[0].path == "steps.s.parameters.grid.1.depth"

    def test_a_parameter_named_like_a_tag_keeps_its_name(self) -> None:
        with pytest.raises(ValidationError) as info:
            normalize_steps({"float": {"float": [float("inf")]}})
        assert problems_from_validation(info.value)[0].path == "steps.float.parameters.float.0"

    def test_a_value_that_is_not_json_is_located_too(self) -> None:
        with pytest.raises(ValidationError) as info:
            normalize_steps({"s": {"when": datetime(2026, 1, 1)}})
        assert problems_from_validation(info.value)[0].path == "steps.s.parameters.when"

    def test_top_level_parameters_and_metadata(self) -> None:
        with pytest.raises(ValidationError) as info:
            TriggerRequest(pipeline_name="p", parameters={"x": float("inf")}, metadata={"m": {"k": float("-inf")}})
        assert [p.path for p in problems_from_validation(info.value)] == ["parameters.x", "metadata.m.k"]

    def test_a_decoded_infinity_is_reported_at_its_path(self) -> None:
        raw = json.dumps({"pipeline_name": "p", "steps": {"t": {"parameters": {"n": [float("inf")]}}}})
        with pytest.raises(MalformedRequest) as info:
            decode_request(raw)
        assert paths(info.value) == {"steps.t.parameters.n.0"}

    @pytest.mark.parametrize(
        ("option", "path"),
        [("-s", "steps.train_model.parameters.n_estimators"), ("-p", "parameters.n_estimators")],
    )
    def test_trigger_send_reports_the_full_path(self, option: str, path: str) -> None:
        assignment = ("train_model." if option == "-s" else "") + "n_estimators=1e400"
        result = CliRunner().invoke(cli, ["send", "training_pipeline", option, assignment])
        assert result.exit_code == 2
        assert f"Error: {path}: Input should be a finite number" in result.output
        assert ".float" not in result.output


class TestUnencodableText:
    """Lone surrogates are refused where the request is built, as `InvalidRequest`s with paths."""

    def test_building_a_request_with_a_lone_surrogate_raises_invalid_request(self) -> None:
        from producers.errors import InvalidRequest

        with pytest.raises(InvalidRequest) as raised:
            TriggerRequest(pipeline_name="training_pipeline", parameters={"data_url": "\ud800"}, source="a\udfffb")
        assert sorted(d.path for d in raised.value.details) == ["parameters.data_url", "source"]

    def test_the_client_raises_invalid_request_and_try_send_returns_none(self, fake_redis: Any) -> None:
        from producers.client import TriggerClient
        from producers.errors import InvalidRequest

        client = TriggerClient(fake_redis)
        with pytest.raises(InvalidRequest):
            client.trigger("training_pipeline", steps={"train_model": {"model_type": "\ud800"}})
        with pytest.raises(InvalidRequest):
            client.trigger("training_pipeline", steps={"train_model": {"n_estimators": float("inf")}})
        unvalidated = TriggerRequest.model_construct(pipeline_name="p", parameters={"x": "\ud800"}, request_id="u")
        assert client.try_send(unvalidated) is None and client.failed_enqueues == 1
        assert client.try_send(object()) is None  # type: ignore[arg-type]
        assert fake_redis.dbsize() == 0

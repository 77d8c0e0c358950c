"""One request model: ``AttributionRequest`` defines the request's fields and defaults once; the Python
API's signatures, the HTTP body, the JSONL reader and the CLI's flags are derived from it or held to it
here (review finding 1: JSONL lines refused ``response_ids``, ``foil_text`` and ``foil_id``)."""

import inspect
import json

import numpy
import pytest

from heta_core import AttributionRequest, Attributor, HetaConfig, HetaError
from heta_core.cli import build_parser
from heta_core.inputs.request import PYTHON_ONLY, REQUEST_FIELDS
from heta_service.schemas import AttributeRequest, BatchItem

from .helpers import heta_in_process
from .test_cli_jsonl import records, write_jsonl

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
# every body field at least once (the test checks the union); ids: heta-demo's " 3" is 23, " 6" is 26
LINES = [
    {"text": PROMPT, "target_text": " 3", "foil_text": " 6"},
    {"text": PROMPT, "response_ids": [23], "foil_id": 26},
    {"input_ids": [56, 76, 190, 8], "target_position": -1},
    {"text": PROMPT, "target_text": " 3 6", "target_mode": "each", "spans": [[0, 3], [4, 7]]},
    {"text": PROMPT, "generate": 1},
    {"messages": [{"role": "user", "content": PROMPT}], "include_template": True},  # heta-demo has no chat template
]


@pytest.fixture(scope="module")
def demo():
    return Attributor.from_pretrained("heta-demo", config=HetaConfig(num_hvp_samples=2))


def test_every_body_field_goes_through_a_jsonl_line(demo, tmp_path, capsys):
    assert set().union(*LINES) == set(AttributionRequest.fields())
    prompts, results = write_jsonl(tmp_path / "prompts.jsonl", LINES), tmp_path / "results.jsonl"
    heta_in_process(capsys, "attribute", "--input", str(prompts), "--output", str(results), "--samples", "2")
    got = records(results)
    assert [r["line"] for r in got] == list(range(1, len(LINES) + 1))
    for line, record in zip(LINES, got, strict=True):
        try:
            expected = demo.attribute(**line)
        except HetaError as error:  # the line gets the engine's own refusal, not "unknown field"
            assert record["error"]["code"] == error.code, (line, record)
            continue
        assert "error" not in record, (line, record)
        served = [t["score"] for t in record["result"]["tokens"]]
        numpy.testing.assert_allclose(
            served, [t["score"] for t in expected.to_dict()["tokens"]], atol=1e-6, err_msg=str(line)
        )
    assert sum("result" in r for r in got) >= len(LINES) - 1  # only the chat line may be refused


@pytest.mark.parametrize("name", ["attribute", "estimate"])
def test_the_python_signatures_are_the_request_model(name):
    parameters = inspect.signature(getattr(Attributor, name)).parameters
    defaults = AttributionRequest.defaults()
    assert set(REQUEST_FIELDS) <= set(parameters)
    assert {field: parameters[field].default for field in REQUEST_FIELDS} == defaults


def test_the_http_bodies_extend_the_request_model():
    for body in (AttributeRequest, BatchItem):
        assert issubclass(body, AttributionRequest)
        own = set(body.model_fields) - set(AttributionRequest.model_fields)
        assert own <= {"config", "model", "wait", "deadline_s", "id"}


def test_every_request_field_has_its_cli_flag_with_the_models_default():
    parser = build_parser()
    attribute = parser._subparsers._group_actions[0].choices["attribute"]
    flags = {action.dest: action for action in attribute._actions}
    defaults = AttributionRequest.defaults()
    # input_ids has no flag: a JSONL line of --input carries it; attention_mask is Python-only
    for field in [*AttributionRequest.fields(), *PYTHON_ONLY]:
        if field in ("input_ids", "attention_mask"):
            continue
        assert field in flags, field
        default = flags[field].default
        assert default in (None, False) or default == defaults.get(field) or field == "granularity", (field, default)


def test_config_flags_left_out_take_the_configs_defaults():
    parser = build_parser()
    args = parser.parse_args(["attribute", "--text", PROMPT])
    knobs = {"seed", "gamma", "mask", "flow", "strategy", "overlap", "ig_steps", "method", "samples", "beta"}
    assert {name: getattr(args, name) for name in knobs} == dict.fromkeys(knobs)


def test_the_published_schema_says_what_admission_checks():
    schema = AttributeRequest.model_json_schema()
    properties = schema["properties"]
    for name in ("input_ids", "messages", "response_ids"):  # review finding 2: `[]` was schema-valid, then a 422
        array = next(option for option in properties[name]["anyOf"] if option.get("type") == "array")
        assert array["minItems"] == 1, name
    assert properties["target_mode"]["enum"] == ["sum", "each"]
    assert [option["required"] for option in schema["oneOf"]] == [["text"], ["input_ids"], ["messages"]]
    refusals = [
        {"input_ids": []},
        {"messages": []},
        {"text": PROMPT, "response_ids": []},
        {"text": PROMPT, "foil_id": -1},
    ]
    for body in refusals:
        with pytest.raises(ValueError):
            AttributeRequest.model_validate(json.loads(json.dumps(body)))

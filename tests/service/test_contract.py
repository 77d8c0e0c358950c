"""One result contract: the Python API, the CLI and the service emit the same JSON for the same
request, that JSON validates against the OpenAPI schema the server publishes, and that schema is
typed end to end (every response declared, every error one problem+json schema, every example valid)."""

import json
import math
import subprocess

import jsonschema
import pytest

import heta_core
from heta_core import Attributor, HetaConfig

from ..helpers import heta_command
from .conftest import serve

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
SPANS = [[0, 3], [12, 15]]
# (service body, the same request for Attributor.attribute, the same on the command line)
REQUESTS = [
    (
        {
            "text": PROMPT,
            "target_text": " 3",
            "spans": SPANS,
            "config": {"samples": 3, "seed": 1, "granularity": "word"},
        },
        (
            {"text": PROMPT, "target_text": " 3", "spans": SPANS, "granularity": "word"},
            {"num_hvp_samples": 3, "seed": 1},
        ),
        [
            "--text",
            PROMPT,
            "--target-text",
            " 3",
            "--spans",
            json.dumps(SPANS),
            "--granularity",
            "word",
            "--samples",
            "3",
            "--seed",
            "1",
        ],
    ),
    (
        {"text": PROMPT + " 3", "target_position": 7, "target_mode": "each", "config": {"method": "ig", "ig_steps": 8}},
        ({"text": PROMPT + " 3", "target_position": 7, "target_mode": "each"}, {"method": "ig", "ig_steps": 8}),
        [
            "--text",
            PROMPT + " 3",
            "--target-position",
            "7",
            "--target-mode",
            "each",
            "--method",
            "ig",
            "--ig-steps",
            "8",
        ],
    ),
]


def schema_validator(document: dict, name: str) -> jsonschema.Draft202012Validator:
    """A validator for components/schemas/<name> of a published OpenAPI 3.1 document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def comparable(body: dict) -> dict:
    """The document without what may differ between runs of the same request: the job id and timings."""
    body = json.loads(json.dumps(body))
    body.pop("job_id", None)
    body["meta"].pop("timings")
    return body


def assert_same(a, b, where="$"):
    """Equal, numbers to float32 rounding."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert math.isclose(a, b, rel_tol=2e-7, abs_tol=1e-30), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with serve(None, tmp_path_factory.mktemp("contract")) as server:
        yield server


@pytest.fixture(scope="module")
def openapi(demo):
    return demo.http.get("/openapi.json").json()


@pytest.mark.parametrize("body, engine, cli", REQUESTS, ids=["heta-spans-words", "ig-each"])
def test_python_api_cli_and_service_emit_the_same_result(demo, openapi, body, engine, cli):
    served = demo.http.post("/attribute", json=body)
    assert served.status_code == 200, served.text
    service_json = served.json()
    kwargs, config = engine
    python_json = Attributor.from_pretrained("heta-demo").attribute(**kwargs, config=HetaConfig(**config)).to_dict()
    done = subprocess.run(
        heta_command("attribute", *cli, "--format", "json"), capture_output=True, text=True, env=demo.env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    cli_json = json.loads(done.stdout)

    # the service adds only job_id and its own timings
    assert set(service_json) - set(python_json) == {"job_id"} and set(cli_json) == set(python_json)
    timings = service_json["meta"]["timings"]
    assert timings["queue_s"] >= 0 and timings["total_s"] >= timings["compute_s"] > 0
    assert python_json["meta"]["timings"]["queue_s"] is None and cli_json["meta"]["timings"]["total_s"] is None
    assert_same(comparable(python_json), comparable(service_json))
    assert_same(comparable(python_json), comparable(cli_json))
    assert python_json["schema_version"] == heta_core.SCHEMA_VERSION == "1.1"
    assert python_json["meta"]["revision"] == "heta-demo-1"

    # every surface's JSON is a valid JobResult of the published schema (the engine's plus a job id)
    validator = schema_validator(openapi, "JobResult")
    for document in (service_json, {**python_json, "job_id": "x"}, {**cli_json, "job_id": "x"}):
        validator.validate(document)
    job = demo.http.get(f"/jobs/{service_json['job_id']}").json()
    schema_validator(openapi, "JobView").validate(job)
    assert job["result"] == service_json


def test_baseline_results_carry_no_heta_only_fields(demo):
    body = demo.http.post(
        "/attribute", json={"text": PROMPT, "target_text": " 3", "config": {"method": "occlusion"}}
    ).json()
    assert body["method"] == "occlusion" and body["meta"]["hvps"] is None and body["meta"]["config"] == {"mask": "zero"}
    timings = body["meta"]["timings"]
    assert (
        timings["baseline_s"] > 0
        and timings["flow_s"] is None
        and timings["kl_s"] is None
        and timings["hessian_s"] is None
    )
    assert all(t["flow"] is None and t["hessian"] is None and t["kl"] is None for t in body["tokens"])


def test_unknown_words_are_reported_not_scored_silently(demo):
    prompt = "c=6 zz=9 b=3 qq=1 zz=9 ? b"  # zz=9 and qq=1 are not in heta-demo's vocabulary
    body = demo.http.post("/attribute", json={"text": prompt, "target_text": " 3"}).json()
    assert body["warnings"] == [
        {
            "code": "unknown_tokens",
            "count": 3,
            "words": ["zz=9", "qq=1"],
            "positions": [],
            "message": body["warnings"][0]["message"],
        }
    ]
    assert "zz=9" in body["warnings"][0]["message"]
    clean = demo.http.post("/attribute", json={"text": PROMPT, "target_text": " 3"}).json()
    assert clean["warnings"] == []


def test_every_route_declares_its_responses_and_problems_share_one_schema(openapi):
    assert openapi["info"]["version"] == heta_core.__version__
    schemas = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            success = [s for s in responses if s.startswith("2")]
            assert success, f"{method} {path} declares no success response"
            for status in (s for s in success if s != "204"):  # 204: no content by definition
                content = responses[status].get("content", {})
                assert content and all(c.get("schema") for c in content.values()), (
                    f"{method} {path} {status} is untyped"
                )
            for status, response in responses.items():
                if int(status) >= 400 and path != "/readyz":
                    assert response["content"] == {"application/problem+json": {"schema": problem_ref}}, (
                        method,
                        path,
                        status,
                    )
    attribute = openapi["paths"]["/attribute"]["post"]["responses"]
    assert {"200", "202", "400", "401", "403", "409", "413", "422", "429", "500", "503", "504"} == set(attribute)
    assert set(openapi["paths"]["/jobs/{job_id}"]["delete"]["responses"]) >= {"202", "404", "409"}
    assert attribute["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobResult"}
    # every field of the result document is described
    for name in ("JobResult", "TokenInfo", "TargetInfo", "Segment", "ResultMeta", "Timings", "ResultWarning"):
        for field, spec in schemas[name]["properties"].items():
            assert spec.get("description") or "$ref" in spec or name == "Versions", f"{name}.{field} has no description"


def _examples(node, where="$"):
    """(where, schema, example) for every example in the document: schema-level `examples` lists
    and media-type `example` / `examples` objects."""
    if isinstance(node, dict):
        if "schema" in node and ("example" in node or "examples" in node):
            values = [node["example"]] if "example" in node else [e["value"] for e in node["examples"].values()]
            for value in values:
                yield where, node["schema"], value
        if isinstance(node.get("examples"), list) and ("properties" in node or "$ref" in node or "type" in node):
            for value in node["examples"]:
                yield where, node, value
        for key, child in node.items():
            yield from _examples(child, f"{where}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _examples(child, f"{where}[{i}]")


def test_every_example_in_the_schema_validates_against_it(openapi):
    found = list(_examples(openapi))
    where = {w for w, _, _ in found}
    assert {
        "$.components.schemas.AttributeRequest",
        "$.components.schemas.ProblemDetails",
        "$.components.schemas.JobAccepted",
    } <= where
    for place, schema, example in found:
        validator = jsonschema.Draft202012Validator({**schema, "components": openapi["components"]})
        errors = list(validator.iter_errors(example))
        assert not errors, f"{place}: {errors[0].message}"


def test_problems_the_server_sends_validate_against_the_problem_schema(demo, openapi):
    validator = schema_validator(openapi, "ProblemDetails")
    answers = [
        demo.http.post("/attribute", json={"text": PROMPT, "spans": [[5, 2]]}),
        demo.http.post("/attribute", json={"text": PROMPT, "surprise": 1}),
        demo.http.post("/attribute", content=b"{", headers={"content-type": "application/json"}),
        demo.http.get("/jobs/unknown"),
        demo.http.post("/attribute", json={"text": PROMPT, "config": {"samples": 10**6}}),
    ]
    assert [a.status_code for a in answers] == [422, 422, 400, 404, 422]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json"
        validator.validate(answer.json())

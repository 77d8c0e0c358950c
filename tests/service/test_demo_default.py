"""With nothing configured, `heta serve` serves the builtin heta-demo; methods are selectable per
request and by HETA_DEFAULT_METHOD."""

import subprocess

from heta_core import Attributor, HetaConfig

from ..helpers import heta_command
from .conftest import base_env, serve

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"  # the pair h=3 (position 3) answers; b=3 is a distractor


def test_serve_defaults_to_heta_demo_and_takes_a_method(tmp_path):
    # the README's quick start: the default, relative Redis directory under the working directory
    with serve(None, tmp_path, cwd=tmp_path, REDIS_DIR=".heta/redis", DEFAULT_METHOD="ig") as server:
        assert (tmp_path / ".heta" / "redis" / "redis.log").is_file()
        models = server.http.get("/models").json()
        assert models["default"] == "heta-demo" and models["default_method"] == "integrated_gradients"
        assert models["methods"] == [
            "heta",
            "gradient",
            "input_x_gradient",
            "integrated_gradients",
            "attention_rollout",
            "occlusion",
        ]
        default = server.http.post("/attribute", json={"text": PROMPT, "target_text": " 3"}).json()
        assert default["meta"]["model"] == "heta-demo" and default["method"] == "integrated_gradients"
        heta = server.http.post(
            "/attribute", json={"text": PROMPT, "target_text": " 3", "config": {"method": "heta"}}
        ).json()
        scores = [t["score"] for t in heta["tokens"]]
        assert max(range(5), key=lambda i: scores[i]) == 3 and heta["tokens"][0]["flow"] is not None
        local = Attributor.from_pretrained("heta-demo", config=HetaConfig(method="occlusion"))
        loo = server.http.post(
            "/attribute", json={"text": PROMPT, "target_text": " 3", "config": {"method": "loo"}}
        ).json()
        expected = local.attribute(PROMPT, target_text=" 3").scores.tolist()
        assert [t["score"] for t in loo["tokens"]] == expected and loo["tokens"][0]["hessian"] is None
        assert server.metric('heta_compute_seconds_total{method="occlusion",stage="baseline"}') > 0
        examples = server.http.get("/openapi.json").json()["components"]["schemas"]["AttributeRequest"]["examples"]
        for example in examples:  # the /docs page's examples run as-is against the default model
            answer = server.http.post("/attribute", json=example)
            assert answer.status_code == 200 and answer.json()["meta"]["model"] == "heta-demo"
        bad = server.http.post("/attribute", json={"text": PROMPT, "config": {"method": "lime"}})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_config" and bad.json()["field"] == "method"


def test_unknown_default_method_stops_the_service_with_one_line(tmp_path):
    env = base_env(None, tmp_path, DEFAULT_METHOD="lime", PORT=0)
    out = subprocess.run(heta_command("serve"), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "method must be one of" in out.stderr

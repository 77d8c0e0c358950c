"""``heta attribute`` / ``heta eval`` with --device-map, --offload-folder and --quantize, and
``heta eval --agreement``: the placed model's numbers, and every bad placement refused in one line."""

import json

import pytest

from .helpers import heta, heta_in_process
from .test_cli import TEXT

SPLIT = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.drop": "cpu",
    "transformer.h.0": "cpu",
    "transformer.h.1": "disk",
    "transformer.ln_f": "disk",
    "lm_head": "disk",
}


def _scores(done) -> list[float]:
    assert done.returncode == 0, done.stderr
    return [t["score"] for t in json.loads(done.stdout)["tokens"]]


def test_a_split_model_attributes_like_the_whole_one(model_dir, tmp_path, capsys):
    common = ("attribute", "--model", model_dir, "--text", TEXT, "--samples", "3", "--format", "json")
    whole = heta_in_process(capsys, *common, "--device", "cpu")
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(SPLIT))
    # a real process: nothing on stderr (accelerate's notice that weights are offloaded is what was asked)
    split = heta(*common, "--device-map", f"@{map_file}", "--offload-folder", str(tmp_path / "offload"))
    assert split.stderr == ""
    assert _scores(split) == pytest.approx(
        _scores(whole), rel=1e-5, abs=1e-7
    )  # float32 model: same kernels, same order


def test_a_quantized_model_attributes_in_a_real_process(model_dir):
    done = heta(
        "attribute",
        "--model",
        model_dir,
        "--text",
        TEXT,
        "--samples",
        "2",
        "--quantize",
        "int8",
        "--dtype",
        "float32",
        "--format",
        "json",
    )
    scores = _scores(done)
    assert len(scores) == len(TEXT.split()) - 1 and all(s > 0 for s in scores)
    assert done.stderr == ""  # no library noise (torchao's CUDA-only extensions on a CPU torch)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--device-map", "everywhere"], "device map must be one of auto, balanced"),
        (["--device-map", "[1]"], "must be an object"),
        (["--device-map", "{}"], "device map is empty"),
        (["--device-map", '{"transformer.h.0": "disk"}'], "needs an offload folder"),
        (["--device-map", '{"transformer.h.0": "cuda:99"}'], "no such CUDA device"),
        (["--device-map", '{"transformer.h.0": true}'], "is not a device"),
        (["--device-map", "@/no/such/map.json"], "cannot read device map file"),
        (["--device-map", "auto", "--device", "cpu"], "not both"),
        (["--offload-folder", "/tmp/x"], "only used with a device map"),
        (["--quantize", "int4"], "invalid choice"),
        (["--quantize", "int8", "--dtype", "float64"], "needs a float32, bfloat16 or float16 model"),
    ],
)
def test_bad_placement_is_one_line_and_nonzero(model_dir, args, words, capsys):
    done = heta_in_process(capsys, "attribute", "--model", model_dir, "--text", TEXT, *args)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("heta: error:") and words in lines[0], done.stderr


def test_a_map_that_splits_tied_embeddings_is_one_line(capsys, tmp_path):
    """heta-demo's head is its input embedding matrix: the map must keep them together."""
    done = heta_in_process(
        capsys,
        "attribute",
        "--model",
        "heta-demo",
        "--text",
        "k1 = v2 ; k1 ?",
        "--device-map",
        '{"transformer": "cpu", "lm_head": "disk"}',
        "--offload-folder",
        str(tmp_path),
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        "heta: error: this model ties lm_head to transformer.wte (one tensor): "
        "the device map must put both on one device"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "give --quantize, --dtype or --device-map"),
        (["--dtype", "float32"], "give --quantize, --dtype or --device-map"),
        (["--quantize", "int8", "--suite"], "separate runs"),
        (["--quantize", "int8", "--model", "gpt2"], "another model needs --dataset PATH"),
        (["--quantize", "int8", "--methods", "heta,guess"], "method"),
    ],
)
def test_bad_agreement_runs_are_one_line_and_nonzero(args, words, capsys):
    done = heta_in_process(capsys, "eval", "--agreement", *args)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr


def test_agreement_reports_rho_and_top_k_overlap_per_method(capsys):
    done = heta_in_process(
        capsys,
        "eval",
        "--agreement",
        "--quantize",
        "int8",
        "--model",
        "heta-demo",
        "--n",
        "3",
        "--methods",
        "heta,occlusion",
        "--samples",
        "2",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)["models"]
    assert report["model"] == "heta-demo" and report["prompts"] == 3 and report["top_k"] == 3
    assert report["reference"] == {"dtype": "float32", "quantization": None, "device_map": {}}
    assert report["candidate"] == {"dtype": "float32", "quantization": "int8", "device_map": {}}
    for method in ("heta", "occlusion"):
        row = report["methods"][method]
        assert -1 <= row["rho_min"] <= row["rho_mean"] <= 1 and 0 <= row["top3_min"] <= row["top3_mean"] <= 1
    # int8 weights barely move HETA on the demo model (docs/engine.md, Placement: the full measurement)
    assert report["methods"]["heta"]["rho_mean"] > 0.9 and report["methods"]["heta"]["top3_mean"] >= 2 / 3


def test_agreement_of_a_device_map_is_exact(capsys, tmp_path):
    mapping = json.dumps(
        {
            "transformer.wte": "cpu",
            "transformer.wpe": "cpu",
            "transformer.drop": "cpu",
            "transformer.h": "disk",
            "transformer.ln_f": "disk",
            "lm_head": "cpu",
        }
    )
    done = heta_in_process(
        capsys,
        "eval",
        "--agreement",
        "--device-map",
        mapping,
        "--offload-folder",
        str(tmp_path),
        "--model",
        "heta-demo",
        "--n",
        "2",
        "--methods",
        "heta,gradient",
        "--samples",
        "2",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "heta-demo: float32 split cpu:4+disk:2 vs float32, 2 prompts"
    for line in lines[2:]:  # the same weights, split: ρ and overlap are exactly 1
        assert line.split()[1:] == ["1.000", "1.000", "1.00", "1.00"], line

"""The builtin heta-demo model, its task, and `heta eval` end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from heta_core import Attributor, InputError
from heta_core.evaluation.demo import DEMO_DIR, task, train
from heta_core.evaluation import EvalSettings, evaluate, metric_names, prepare, qa_items, synthetic_items

ROOT = Path(__file__).resolve().parents[1]
QA = ROOT.parent / "shared" / "data" / "heta_qa_dataset_100_unique.json"
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def demo():
    return Attributor.from_pretrained("heta-demo", device="cpu")


def test_task_examples_have_known_positions():
    for e in task.examples(200, 3):
        keys = [w.split("=")[0] for w in e.words[: e.candidates]]
        values = [w.split("=")[1] for w in e.words[: e.candidates]]
        (gold,) = e.gold
        assert e.words[-2:] == [task.QUERY, keys[gold]] and values[gold] == e.answer
        assert len(set(keys)) == len(keys)  # keys never repeat: the answer is unambiguous
        assert 1 <= len(e.distractors) <= 2 and all(values[i] == e.answer for i in e.distractors)
        assert all(values.count(v) in (2, 3) for v in values)  # counting values cannot solve it
    assert task.examples(5, 1) == task.examples(5, 1) and task.examples(5, 1) != task.examples(5, 2)


def test_demo_ships_small_and_loads_offline():
    weights = DEMO_DIR / "model.safetensors"
    assert weights.stat().st_size <= 5 * 2**20
    code = (
        "import time; from heta_core import Attributor; from heta_core.models.loading import load_model\n"
        "load_model('heta-demo', device='cpu')\n"  # imports transformers' GPT-2 code once
        "t = time.perf_counter(); a = Attributor.from_pretrained('heta-demo', device='cpu')\n"
        "print(time.perf_counter() - t, a.model.config.model_type, a.tokenizer('a=1 ? a')['input_ids'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=OFFLINE, capture_output=True, text=True, timeout=300, check=True)
    seconds, model_type, ids = out.stdout.split(maxsplit=2)
    assert model_type == "gpt2" and json.loads(ids) == [task.VOCAB.index(w) for w in ("a=1", "?", "a")]
    assert float(seconds) < 2.0


def test_demo_reaches_its_accuracy_on_held_out_examples(demo):
    held_out = task.examples(300, train.HELD_OUT_SEED)
    accuracy = train.accuracy(demo.model, held_out, demo.tokenizer.get_vocab())
    assert accuracy >= 0.95
    recorded = json.loads((DEMO_DIR / "training.json").read_text())
    assert recorded["held_out_accuracy"] >= 0.95 and recorded["seed"] == 0


def test_training_is_reproducible_from_its_seed(tmp_path):
    torch.set_num_threads(1)  # same seed and thread count → same weights
    try:
        runs = [train.train(tmp_path / name, seed=seed, steps=20, log=lambda _: None) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    a, b, c = (load_file(tmp_path / name / "model.safetensors") for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert runs[0]["held_out_accuracy"] == runs[1]["held_out_accuracy"]
    assert Attributor.from_pretrained(str(tmp_path / "a")).model.config.n_layer == 2


def test_demo_scores_point_at_the_stored_pair(demo):
    hits = 0
    for e in task.examples(20, 0):
        result = demo.attribute(e.text, target_text=" " + e.answer)
        ranked = sorted(range(e.candidates), key=lambda i: -float(result.scores[i]))
        hits += ranked[0] in e.gold
    assert hits >= 19


def test_synthetic_items_map_spans_to_tokens(demo):
    for item, e in zip(synthetic_items(10, 0), task.examples(10, 0)):
        prepared = prepare(demo.tokenizer, item)
        assert prepared.gold == e.gold and prepared.distractor == e.distractors
        assert prepared.candidates == list(range(e.candidates)) and prepared.target == demo.tokenizer.get_vocab()[e.answer]


def test_heta_eval_json_end_to_end():
    out = subprocess.run(
        [sys.executable, "-m", "heta_core.cli", "eval", "--n", "30", "--format", "json"],
        env=OFFLINE, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["model"] == "heta-demo" and report["dataset"] == "synthetic" and report["n"] == 30
    methods = ["heta", "gradient", "input_x_gradient", "integrated_gradients", "attention_rollout", "occlusion"]
    assert list(report["results"]) == methods
    for method in methods:
        assert list(report["results"][method]) == metric_names(EvalSettings())
        for name, cell in report["results"][method].items():
            low, high = cell["ci95"]
            assert low - 1e-12 <= cell["mean"] <= high + 1e-12, (method, name)
    hit = {m: report["results"][m]["hit@1"]["mean"] for m in methods}
    assert hit["heta"] >= 0.95 and all(hit["heta"] >= hit[m] for m in methods)
    assert min(hit.values()) < 0.8  # the distractors make at least one baseline miss
    assert report["model_accuracy"] >= 0.95


def test_heta_eval_reads_the_curated_qa_format(make_attributor):
    items = qa_items(QA, 3)
    assert items[0].prompt.endswith("? Answer:") and items[0].answer == " leaves"
    support = items[0].prompt[items[0].gold[0][0] : items[0].gold[0][1]]
    assert support == "Photosynthesis"
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    report = evaluate(attributor, items, ["heta", "ig"], settings=EvalSettings(bootstrap=50), dataset="qa")
    assert report["n"] == 3 and list(report["results"]) == ["heta", "integrated_gradients"]
    assert -1.0 <= report["results"]["heta"]["dsa"]["mean"] <= 1.0


def test_heta_eval_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"examples": [{"input_text": "x"}]}))
    for args, message in (
        (["--dataset", str(bad)], "lacks field(s)"),
        (["--dataset", str(tmp_path / "missing.json")], "cannot read dataset"),
        (["--methods", "heta,lime"], "method must be one of"),
        (["--n", "0"], "--n must be >= 1"),
    ):
        out = subprocess.run([sys.executable, "-m", "heta_core.cli", "eval", *args], env=OFFLINE, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    with pytest.raises(InputError, match="no examples"):
        qa_items(_write(tmp_path / "empty.json", {"examples": []}))


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_cli_defaults_to_heta_demo_and_trains_it(tmp_path):
    def heta(*args):
        return subprocess.run([sys.executable, "-m", "heta_core.cli", *args], env=OFFLINE, capture_output=True, text=True, timeout=300)

    out = heta("attribute", "--text", "c=6 e=6 b=3 h=3 m=6 ? h", "--target-text", "3", "--method", "ig", "--format", "json")
    result = json.loads(out.stdout)
    assert result["meta"]["model"] == "heta-demo" and result["method"] == "integrated_gradients"
    table = heta("attribute", "--text", "c=6 e=6 b=3 h=3 m=6 ? h", "--target-text", "3", "--method", "loo").stdout
    assert "method occlusion" in table and "flow" not in table  # a baseline has one column
    trained = heta("train-demo", "--out", str(tmp_path / "demo"), "--steps", "5")
    assert trained.returncode == 0 and json.loads(trained.stdout)["steps"] == 5
    assert (tmp_path / "demo" / "model.safetensors").exists()
    again = heta("train-demo", "--out", str(tmp_path / "demo"))
    assert again.returncode == 2 and "exists and is not empty" in again.stderr


def test_heta_eval_table_fits_120_columns():
    out = subprocess.run(
        [sys.executable, "-m", "heta_core.cli", "eval", "--n", "8"], env=OFFLINE, capture_output=True, text=True, timeout=600, check=True
    )
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120, out.stdout
    header = lines[1].split()
    assert header == ["metric", "heta", "gradient", "ixg", "ig", "rollout", "occlusion"]
    hit = lines[2].split()
    assert hit[0] == "hit@1" and len(hit) == 7 and all(0 <= float(v) <= 1 for v in hit[1:])
    assert lines[3].split()[0].startswith("[")  # its interval on the line below

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
from heta_core.evaluation import EvalSettings, evaluate, metric_names, prepare, qa_items, synthetic_items
from heta_core.evaluation.demo import DEMO_DIR, task, train

from .conftest import SHARED_DATA
from .helpers import ROOT

QA_NAME = "heta_qa_dataset_100_unique.json"
QA = SHARED_DATA / QA_NAME  # the paper's curated file (CI has it); tests that read it are marked shared_data
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


# The curated file's format (../shared/data/README.md), on its first three examples: a distractor
# narrative, an answer-bearing support sentence and a question joined as
# "narrative <s> support <s> Question: question"; the important words as positions in the support.
CURATED_EXAMPLES = [
    (
        "The protagonist returns to the village after the winter storm and reflects on her father's passing.",
        "Photosynthesis primarily occurs in the leaves of the plant, where chloroplasts capture light energy.",
        "In which part of the plant does photosynthesis mainly take place?",
        "leaves",
        ["leaves", "photosynthesis", "plant", "primarily", "occurs", "chloroplasts", "capture", "light"],
        [0, 1, 2, 5, 8, 10, 11, 12],
    ),
    (
        "The protagonist returns to the village after the winter storm and reflects on her father's passing.",
        "Evaporation changes liquid water into water vapor when heat provides enough energy for molecules to escape.",
        "What process changes liquid water into water vapor?",
        "evaporation",
        ["evaporation", "changes", "liquid", "water", "vapor", "heat", "provides", "enough"],
        [0, 1, 2, 3, 5, 6, 8, 9, 10],
    ),
    (
        "The protagonist returns to the village after the winter storm and reflects on her father's passing.",
        "The heart pumps blood through blood vessels, delivering oxygen and nutrients to tissues in the body.",
        "Which organ pumps blood through the body?",
        "heart",
        ["heart", "pumps", "blood", "body", "vessels", "delivering", "oxygen", "nutrients"],
        [1, 2, 3, 5, 6, 7, 8, 10, 15],
    ),
]


def write_curated_qa(path: Path) -> Path:
    """A small dataset file in the curated format (every field the real file's examples have)."""
    examples = []
    for number, (narrative, support, question, answer, words, indices) in enumerate(CURATED_EXAMPLES):
        examples.append(
            {
                "id": f"heta_qa_{number:05d}",
                "base_pair_id": f"narrative_00__sciq_{number:02d}",
                "narrative_id": "narrative_00",
                "sciq_id": f"sciq_{number:02d}",
                "narrative_segment": narrative,
                "sciq_support_segment": support,
                "question": question,
                "answer": answer,
                "target_first_answer_token": answer,
                "input_text": f"{narrative} <s> {support} <s> Question: {question}",
                "important_words": words,
                "important_word_indices_in_sciq_support": indices,
                "label_note": "Important words are restricted to the answer-bearing "
                "support segment; the narrative is a distractor.",
            }
        )
    path.write_text(
        json.dumps(
            {
                "dataset_name": "heta_style_narrativeqa_sciq_qa_attribution",
                "description": "three examples in the curated format",
                "num_examples": len(examples),
                "num_unique_base_pairs": len(examples),
                "construction": "[NarrativeQA-style sentence] <s> [SciQ-style "
                "support sentence] <s> Question: [SciQ question]",
                "examples": examples,
            },
            indent=1,
        )
    )
    return path


@pytest.fixture(params=["built", pytest.param("shared", marks=pytest.mark.shared_data(QA_NAME))])
def qa_file(request, tmp_path) -> Path:
    """The curated format: a small file built here (always), and the real file where it is."""
    return write_curated_qa(tmp_path / "qa.json") if request.param == "built" else QA


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
    # (its load time is heta bench's business, not a test's: this machine's speed varies 2x)
    code = (
        "from heta_core import Attributor\n"
        "a = Attributor.from_pretrained('heta-demo', device='cpu')\n"
        "print(a.model.config.model_type, a.tokenizer('a=1 ? a')['input_ids'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=OFFLINE, capture_output=True, text=True, timeout=300, check=True
    )
    model_type, ids = out.stdout.split(maxsplit=1)
    assert model_type == "gpt2" and json.loads(ids) == [task.VOCAB.index(w) for w in ("a=1", "?", "a")]


def test_demo_reaches_its_accuracy_on_held_out_examples(demo):
    held_out = task.examples(300, train.HELD_OUT_SEED)
    accuracy = train.accuracy(demo.model, held_out, demo.tokenizer.get_vocab())
    assert accuracy >= 0.95
    recorded = json.loads((DEMO_DIR / "training.json").read_text())
    assert recorded["held_out_accuracy"] >= 0.95 and recorded["seed"] == 0


def test_training_is_reproducible_from_its_seed(tmp_path):
    torch.set_num_threads(1)  # same seed and thread count → same weights
    try:
        runs = [
            train.train(tmp_path / name, seed=seed, steps=20, log=lambda _: None)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))
        ]
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
    for item, e in zip(synthetic_items(10, 0), task.examples(10, 0), strict=True):
        prepared = prepare(demo.tokenizer, item)
        assert prepared.gold == e.gold and prepared.distractor == e.distractors
        assert (
            prepared.candidates == list(range(e.candidates)) and prepared.target == demo.tokenizer.get_vocab()[e.answer]
        )


def test_heta_eval_json_end_to_end():
    out = subprocess.run(
        [sys.executable, "-m", "heta_core.cli", "eval", "--n", "30", "--format", "json"],
        env=OFFLINE,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
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


def test_heta_eval_reads_the_curated_qa_format(make_attributor, qa_file):
    items = qa_items(qa_file, 3)
    assert items[0].prompt.endswith("? Answer:") and items[0].answer == " leaves"
    support = items[0].prompt[items[0].gold[0][0] : items[0].gold[0][1]]
    assert support == "Photosynthesis"
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    report = evaluate(attributor, items, ["heta", "ig"], settings=EvalSettings(bootstrap=50), dataset="qa")
    assert report["n"] == 3 and list(report["results"]) == ["heta", "integrated_gradients"]
    assert -1.0 <= report["results"]["heta"]["dsa"]["mean"] <= 1.0


@pytest.mark.shared_data(QA_NAME)
def test_the_built_file_has_the_curated_files_format(tmp_path):
    """What the format tests build is what the paper's file holds: the same fields, the same examples."""
    real = json.loads(QA.read_text())
    built = json.loads(write_curated_qa(tmp_path / "qa.json").read_text())
    assert set(built) == set(real) and all(set(e) == set(real["examples"][0]) for e in built["examples"])
    fields = (
        "input_text",
        "narrative_segment",
        "sciq_support_segment",
        "question",
        "target_first_answer_token",
        "important_words",
        "important_word_indices_in_sciq_support",
    )
    for mine, theirs in zip(built["examples"], real["examples"], strict=False):  # the real file holds more
        assert {k: mine[k] for k in fields} == {k: theirs[k] for k in fields}
    assert len(qa_items(QA)) == real["num_examples"] == 100  # and the whole file loads


def test_heta_eval_bad_input_is_one_line(tmp_path, capsys):
    from heta_core.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"examples": [{"input_text": "x"}]}))
    for number, (args, message) in enumerate(
        (
            (["--dataset", str(bad)], "lacks field(s)"),
            (["--dataset", str(tmp_path / "missing.json")], "cannot read dataset"),
            (["--methods", "heta,lime"], "method must be one of"),
            (["--n", "0"], "--n must be >= 1"),
        )
    ):
        if number == 0:  # a real process once (nothing else on its stderr); then the same entry point here
            out = subprocess.run(
                [sys.executable, "-m", "heta_core.cli", "eval", *args],
                env=OFFLINE,
                capture_output=True,
                text=True,
                timeout=300,
            )
            status, stderr = out.returncode, out.stderr
        else:
            status, stderr = main(["eval", *args]), capsys.readouterr().err
        assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    with pytest.raises(InputError, match="no examples"):
        qa_items(_write(tmp_path / "empty.json", {"examples": []}))


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_cli_defaults_to_heta_demo_and_trains_it(tmp_path, capsys):
    from heta_core.cli import main

    # the front door as a real process once; the other calls run the same entry point (`python -m
    # heta_core.cli` is `sys.exit(main())`) in this process: each process start-up costs seconds
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "heta_core.cli",
            "attribute",
            "--text",
            "c=6 e=6 b=3 h=3 m=6 ? h",
            "--target-text",
            "3",
            "--method",
            "ig",
            "--format",
            "json",
        ],
        env=OFFLINE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout)
    assert result["meta"]["model"] == "heta-demo" and result["method"] == "integrated_gradients"

    def heta(*args):
        status = main(list(args))
        return status, capsys.readouterr()

    status, table = heta("attribute", "--text", "c=6 e=6 b=3 h=3 m=6 ? h", "--target-text", "3", "--method", "loo")
    assert status == 0 and "method occlusion" in table.out and "flow" not in table.out  # a baseline has one column
    status, trained = heta("train-demo", "--out", str(tmp_path / "demo"), "--steps", "5")
    assert status == 0 and json.loads(trained.out)["steps"] == 5
    assert (tmp_path / "demo" / "model.safetensors").exists()
    status, again = heta("train-demo", "--out", str(tmp_path / "demo"))
    assert status == 2 and "exists and is not empty" in again.err and len(again.err.strip().splitlines()) == 1


def test_heta_eval_table_fits_120_columns():
    out = subprocess.run(
        [sys.executable, "-m", "heta_core.cli", "eval", "--n", "8"],
        env=OFFLINE,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120, out.stdout
    header = lines[1].split()
    assert header == ["metric", "heta", "gradient", "ixg", "ig", "rollout", "occlusion"]
    hit = lines[2].split()
    assert hit[0] == "hit@1" and len(hit) == 7 and all(0 <= float(v) <= 1 for v in hit[1:])
    assert lines[3].split()[0].startswith("[")  # its interval on the line below

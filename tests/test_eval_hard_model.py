"""heta-demo-hard and the suite's conditions: each condition's ground truth holds by construction, and
the shipped model answers them, unsaturated, as its training record says, reproducibly from its seed."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

from heta_core import Attributor
from heta_core.evaluation.demo import HARD_DIR, conditions, hard_task, task, train
from heta_core.evaluation.demo.hard_task import answer_of


def _answer_without(example, removed):
    context = [w for i, w in enumerate(example.words[: example.candidates]) if i not in set(removed)]
    try:
        return answer_of(context, example.words[example.candidates :])
    except KeyError:
        return None  # the question has no answer any more


@pytest.mark.parametrize("model", list(conditions.MODEL_CONDITIONS))
def test_condition_ground_truth_holds_by_construction(model):
    vocab = set(hard_task.VOCAB if model == "heta-demo-hard" else task.VOCAB)
    for name in conditions.MODEL_CONDITIONS[model][1]:
        for e in conditions.examples(60, 5, name, model):
            assert set(e.words) <= vocab and e.answer == _answer_without(e, [])
            assert e.gold and not set(e.gold) & set(e.distractors) and max(e.gold) < e.candidates
            if name == "redundant":  # each copy suffices alone; removing all of them loses the answer
                assert all(_answer_without(e, [g]) == e.answer for g in e.gold) and _answer_without(e, e.gold) is None
            else:  # each causal token is necessary
                assert all(_answer_without(e, [g]) != e.answer for g in e.gold), (name, e.words)
            assert _answer_without(e, e.distractors) == e.answer  # look-alikes never carry the answer
            shown = {e.words[g].split("=")[1] for g in e.gold} if name == "compose" else {e.answer}
            for value in shown:  # the answer value (each joined value) is stored elsewhere too: a look-alike
                elsewhere = [
                    i for i, w in enumerate(e.words[: e.candidates]) if w.split("=")[-1] == value and i not in e.gold
                ]
                assert elsewhere and set(elsewhere) <= set(e.distractors), (name, e.words)
    assert conditions.examples(5, 1, "conflict") == conditions.examples(5, 1, "conflict")
    with pytest.raises(ValueError, match="two_hop"):
        conditions.examples(1, 0, "two_hop", "heta-demo")  # heta-demo's vocabulary has no pointers


def test_specific_condition_prompts():
    for e in conditions.examples(20, 0, "two_hop"):
        (pointer,) = [e.words[g] for g in e.gold if ">" in e.words[g]]
        (pair,) = [e.words[g] for g in e.gold if "=" in e.words[g]]
        assert e.words[-2:] == ["?", pointer.split(">")[0]] and pair.split("=")[0] == pointer.split(">")[1]
        assert e.answer == pair.split("=")[1]
    c = conditions.examples(1, 0, "conflict")[0]
    (old,) = [i for i in c.distractors if c.words[i].startswith(c.words[-1] + "=")]
    assert old < c.gold[0] and c.words[c.gold[0]] == f"{c.words[-1]}={c.answer}"
    s = conditions.examples(1, 0, "compose")[0]
    values = {w.split("=")[0]: w.split("=")[1] for w in s.words[: s.candidates]}
    assert s.words[-3] == "&" and s.answer == values[s.words[-2]] + values[s.words[-1]]
    assert sorted(s.words[g].split("=")[0] for g in s.gold) == sorted(s.words[-2:])
    assert [x.gold for x in conditions.examples(3, 0, "early")] == [[0]] * 3
    assert all(x.gold == [x.candidates - 1] for x in conditions.examples(3, 0, "late"))


def test_hard_model_ships_small_with_its_training_record():
    assert (HARD_DIR / "model.safetensors").stat().st_size <= 10 * 2**20
    recorded = json.loads((HARD_DIR / "training.json").read_text())
    recipe = train.RECIPES["heta-demo-hard"]
    assert recorded["model"] == "heta-demo-hard" and recorded["seed"] == 0 and recorded["label_smoothing"] > 0
    assert (recorded["steps"], recorded["lr"], recorded["queries"], recorded["threads"]) == (
        recipe.steps,
        recipe.lr,
        recipe.queries,
        1,
    )
    assert recorded["train_seconds"] <= 15 * 60
    assert set(recorded["condition_accuracy"]) == set(conditions.CONDITIONS)


def test_hard_model_accuracy_per_condition_on_held_out_prompts(hard):
    """The recorded per-condition accuracy, recomputed on the same held-out prompts."""
    ids = hard.tokenizer.get_vocab()
    recorded = json.loads((HARD_DIR / "training.json").read_text())
    for name in conditions.CONDITIONS:
        answers = train.correct(
            hard.model, conditions.examples(recorded["condition_examples"], train.HELD_OUT_SEED, name), ids
        )
        assert sum(answers) / len(answers) == recorded["condition_accuracy"][name] >= 0.9, name


def test_hard_model_outputs_are_not_saturated(hard):
    """Label smoothing keeps P(answer) well below 1, so gradients and curvature carry signal."""
    ids = hard.tokenizer.get_vocab()
    probabilities = []
    with torch.no_grad():
        for e in conditions.examples(30, 0, "base"):
            logits = hard.model(input_ids=torch.tensor([[ids[w] for w in e.words]])).logits[0, -1]
            probabilities.append(float(torch.softmax(logits, -1)[ids[e.answer]]))
    assert max(probabilities) < 0.97 and sum(probabilities) / len(probabilities) > 0.5


def test_hard_model_embeddings_start_as_sums_of_parts():
    torch.manual_seed(0)
    network = GPT2LMHeadModel(train.model_config("heta-demo-hard"))
    ids = train.tokenizer(hard_task.VOCAB).get_vocab()
    train.factored_embeddings(network, ids, hard_task.parts)
    e = lambda word: network.get_input_embeddings().weight[ids[word]]  # noqa: E731
    # "f=3" = key f + value 3 + "=": differences cancel the parts two words share
    assert torch.allclose(e("f=3") - e("f=7"), e("b=3") - e("b=7"), atol=1e-6)
    assert torch.allclose(e("f=3") - e("f~3"), e("b=3") - e("b~3"), atol=1e-6)
    assert torch.allclose(e("A>f") - e("A>b"), e("f=3") - e("b=3"), atol=1e-6)
    assert torch.allclose(e("37") - e("47"), e("3") - e("4"), atol=1e-6)
    assert torch.allclose(e("f=3") - e("f"), e("b=3") - e("b"), atol=1e-6)  # a query token is its key part
    assert not torch.allclose(e("37"), e("73"))  # the two slots of a joined answer differ


def test_hard_training_is_reproducible_from_its_seed(tmp_path):
    # the recipe trains on one thread whatever the caller's count (and restores it afterwards)
    threads = torch.get_num_threads()
    runs = [
        train.train(tmp_path / name, model="heta-demo-hard", seed=seed, steps=3, held_out=20, log=lambda _: None)
        for name, seed in (("a", 0), ("b", 0), ("c", 1))
    ]
    a, b, c = (load_file(tmp_path / name / "model.safetensors") for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert runs[0]["condition_accuracy"] == runs[1]["condition_accuracy"] and runs[0]["condition_examples"] == 10
    assert runs[0]["threads"] == 1 and torch.get_num_threads() == threads
    assert Attributor.from_pretrained(str(tmp_path / "a")).model.config.n_layer == 4

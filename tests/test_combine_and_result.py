import json

import pytest
import torch

from heta_core import NonFiniteResultError
from heta_core.methods.heta.combine import combine

from .conftest import TEXT


def test_eq5_without_normalisation():
    flow, s, i = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([10.0, 20.0, 30.0]), torch.tensor([0.1, 0.0, 0.4])
    out = combine(flow, s, i, beta=0.5, gamma=0.5, normalize="none")
    torch.testing.assert_close(out, torch.tensor([0.5 * 5.05, 0.3 * 10.0, 0.2 * 15.2]))


def test_eq5_simplex_rescales_each_term_to_sum_one():
    flow, s, i = torch.tensor([0.5, 0.5]), torch.tensor([3.0, 1.0]), torch.tensor([0.0, 2.0])
    out = combine(flow, s, i, beta=0.25, gamma=0.75, normalize="simplex")
    torch.testing.assert_close(out, torch.tensor([0.5 * 0.25 * 0.75, 0.5 * (0.25 * 0.25 + 0.75)]))
    zero = combine(flow, s, torch.zeros(2), beta=0.5, gamma=0.5, normalize="simplex")
    torch.testing.assert_close(zero, flow * 0.5 * torch.tensor([0.75, 0.25]))


def test_result_fields_and_scores_follow_eq5(make_attributor, device):
    result = make_attributor("qwen2", beta=0.3, gamma=0.7, normalize="none").attribute(TEXT)
    n = len(TEXT.split()) - 1
    for name in ("scores", "flow", "hessian", "kl"):
        tensor = getattr(result, name)
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu" and tensor.shape == (n,)
    torch.testing.assert_close(result.scores, result.flow * (0.3 * result.hessian + 0.7 * result.kl))
    # the default rescales S and I to sum 1 each first; the terms themselves are the same
    default = make_attributor("qwen2", beta=0.3, gamma=0.7).attribute(TEXT)
    torch.testing.assert_close(default.hessian, result.hessian)
    expected = result.flow * (0.3 * result.hessian / result.hessian.sum() + 0.7 * result.kl / result.kl.sum())
    torch.testing.assert_close(default.scores, expected)
    assert result.target.position == n and result.target.text == "bone"
    assert result.target.logprob < 0
    assert [t.position for t in result.tokens] == list(range(n))
    assert set(result.timings.stages()) == {"flow", "kl", "hessian", "total"}
    assert all(v >= 0 for v in result.timings.stages().values())
    assert result.timings.baseline_s is None and result.timings.queue_s is None and result.timings.total_s is None
    meta = result.meta
    assert meta.model_type == "qwen2" and meta.dtype == "float64" and meta.device.split(":")[0] == device.type
    assert meta.config["num_hvp_samples"] == 10 and meta.hvps == 10 * n and meta.config["beta"] == 0.3
    assert meta.versions.torch == torch.__version__ and meta.versions.transformers


def test_to_dict_is_strict_json_and_topk_is_ordered(make_attributor):
    result = make_attributor("gpt2").attribute(TEXT)
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(payload["tokens"]) == len(result.tokens)
    row = payload["tokens"][1]
    assert set(row) == {
        "position",
        "id",
        "text",
        "start",
        "end",
        "role",
        "message",
        "template",
        "special",
        "score",
        "flow",
        "hessian",
        "kl",
    }
    assert row["score"] == pytest.approx(float(result.scores[1]))
    top = result.topk(3)
    assert [r["score"] for r in top] == sorted((float(s) for s in result.scores), reverse=True)[:3]
    assert top[0]["position"] == int(result.scores.argmax())
    assert result.topk(100) and len(result.topk(100)) == len(result.tokens)
    with pytest.raises(NonFiniteResultError, match="not finite"):  # beyond float32's range: an error, never nulls
        make_attributor("gpt2", beta=1e308, gamma=1e308).attribute(TEXT)


def test_words_the_tokenizer_does_not_know_are_reported(make_attributor):
    result = make_attributor("gpt2", num_hvp_samples=1).attribute("the zebra sat on the okapi zebra [UNK] mat")
    (warning,) = result.warnings
    assert (warning.code, warning.count, warning.words) == (
        "unknown_tokens",
        3,
        ["zebra", "okapi"],
    )  # a typed "[UNK]" is the caller's
    assert not make_attributor("gpt2", num_hvp_samples=1).attribute("the cat sat on the mat").warnings

"""A response produced elsewhere (vLLM, TGI, ...) given as token ids: appended as given, attributed
like target_text, checked against the vocabulary and against the served model's likelihood."""

import json
import math

import numpy as np
import pytest
import torch

from heta_core import Attributor, HetaConfig, InputError
from heta_core.results.assemble import UNLIKELY_LOGPROB

PROMPT = "the cat sat on the mat . the dog ate the"
DEMO = "c=6 e=6 b=3 h=3 m=6 ? h"


@pytest.mark.parametrize("mode", ["sum", "each"])
@pytest.mark.parametrize("method", ["heta", "occlusion"])
def test_response_ids_equal_target_text(make_attributor, mode, method):
    attributor = make_attributor("llama", num_hvp_samples=2, method=method)
    ids = attributor.tokenizer(" bone .", add_special_tokens=False)["input_ids"]
    by_text = attributor.attribute(PROMPT, target_text=" bone .", target_mode=mode)
    by_ids = attributor.attribute(PROMPT, response_ids=ids, target_mode=mode)
    for name in ("scores", "flow", "hessian", "kl"):
        expected, actual = getattr(by_text, name), getattr(by_ids, name)
        assert (expected is None and actual is None) or torch.equal(expected, actual), name
    assert [t.id for t in by_ids.targets] == ids
    assert [t.logprob for t in by_ids.targets] == [t.logprob for t in by_text.targets]
    assert by_ids.text == PROMPT + " bone ." and [by_ids.text[t.start : t.end] for t in by_ids.targets] == [
        " bone",
        " .",
    ]
    # the same ids as a tensor or an array; with ids input there is no text to index
    assert torch.equal(
        attributor.attribute(PROMPT, response_ids=torch.tensor(ids), target_mode=mode).scores, by_ids.scores
    )
    prompt_ids = attributor.tokenizer(PROMPT)["input_ids"]
    from_ids = attributor.attribute(input_ids=prompt_ids, response_ids=np.array(ids), target_mode=mode)
    assert torch.equal(from_ids.scores, by_ids.scores) and from_ids.text is None and from_ids.targets[0].start is None


def test_estimate_counts_the_response(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    ids = attributor.tokenizer(" bone .", add_special_tokens=False)["input_ids"]
    assert attributor.estimate(PROMPT, response_ids=ids) == attributor.estimate(PROMPT, target_text=" bone .")


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"response_ids": [5, 10_000]}, "invalid_input_ids"),
        ({"response_ids": [-1]}, "invalid_input_ids"),
        ({"response_ids": [5, 1.5]}, "invalid_input_ids"),
        ({"response_ids": "5,6"}, "invalid_input_ids"),
        ({"response_ids": []}, "empty_input"),
        ({"response_ids": [5], "target_text": " bone"}, "invalid_target"),
        ({"response_ids": [5], "generate": 1}, "invalid_target"),
        ({"response_ids": [5], "target_position": 2}, "invalid_target"),
    ],
)
def test_bad_response_ids(make_attributor, kwargs, code):
    attributor = make_attributor("gpt2")
    for call in (attributor.estimate, attributor.attribute):
        with pytest.raises(InputError) as error:
            call(PROMPT, **kwargs)
        assert error.value.code == code, error.value


@pytest.fixture(scope="module")
def demo():
    return Attributor.from_pretrained("heta-demo", config=HetaConfig(num_hvp_samples=2))


def test_unlikely_response_is_flagged(demo):
    """heta-demo answers " 3" here with p ≈ 1; " 7" is stored nowhere: log p far below ln(1e-4)."""
    likely = demo.tokenizer(" 3", add_special_tokens=False)["input_ids"]
    unlikely = demo.tokenizer(" 7", add_special_tokens=False)["input_ids"]
    good = demo.attribute(DEMO, response_ids=likely)
    assert good.warnings == [] and good.target.logprob > math.log(0.5)
    bad = demo.attribute(DEMO, response_ids=likely + unlikely, target_mode="each")
    (warning,) = bad.warnings
    assert warning.code == "unlikely_response" and warning.count == 1 and warning.positions == [len(bad.tokens) + 1]
    assert warning.words == [" 7"] and "different model or tokenizer" in warning.message
    assert bad.targets[1].logprob < UNLIKELY_LOGPROB < bad.targets[0].logprob
    # only response_ids are checked: target_text states what the caller wants explained
    assert demo.attribute(DEMO, target_text=" 7").warnings == []
    assert bad.to_dict()["warnings"][0]["positions"] == [len(bad.tokens) + 1]


def test_cli_takes_response_ids_and_a_foil(capsys):
    from heta_core.cli import main

    assert (
        main(
            [
                "attribute",
                "--text",
                DEMO,
                "--response-ids",
                "23",
                "--foil-text",
                " 6",
                "--samples",
                "2",
                "--format",
                "json",
            ]
        )
        == 0
    )
    (target,) = json.loads(capsys.readouterr().out)["targets"]
    assert target["id"] == 23 and target["foil"]["id"] == 26
    assert main(["attribute", "--text", DEMO, "--response-ids", "23, 10000", "--samples", "2"]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err
    assert main(["attribute", "--text", DEMO, "--response-ids", "a,b"]) == 2
    assert "comma-separated token ids" in capsys.readouterr().err

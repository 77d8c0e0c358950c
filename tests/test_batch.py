"""Attributor.attribute_batch / iter_batch: every batch form gives, item for item, exactly the
result of ``attribute`` on that prompt alone; bad items are refused before any prompt runs (or
returned in place); progress covers the whole batch."""

import pytest
import torch

from heta_core import HetaConfig, InputError

PROMPTS = ["the cat sat on the mat", "she gave him a red key to the door", "water boils at one hundred degrees"]


def scores(result) -> torch.Tensor:
    return result.scores if result.scores.dim() == 1 else result.scores.flatten()


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_encoding_equals_each_prompt_alone(make_attributor, tokenizer, side):
    attributor = make_attributor("llama", num_hvp_samples=3, seed=4)
    tokenizer.padding_side = side
    try:
        encoding = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    assert bool((encoding["attention_mask"] == 0).any())  # the batch really is padded
    batch = attributor.attribute_batch(encoding)
    assert len(batch) == len(PROMPTS)
    for prompt, result in zip(PROMPTS, batch, strict=True):
        alone = attributor.attribute(prompt)
        assert [t.text for t in result.tokens] == [t.text for t in alone.tokens]
        torch.testing.assert_close(scores(result), scores(alone), rtol=0, atol=0)


def test_mixed_items_shared_arguments_and_per_item_configs(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    other = HetaConfig(method="gradient")
    ids = attributor.tokenizer(PROMPTS[1])["input_ids"]
    batch = attributor.attribute_batch(
        [
            PROMPTS[0],
            {"input_ids": ids, "target_text": " bone"},
            {"text": PROMPTS[2], "config": {"method": "occlusion"}},
            {"text": PROMPTS[0], "config": other},
        ],
        target_text=" tree",
    )
    expected = [
        attributor.attribute(PROMPTS[0], target_text=" tree"),
        attributor.attribute(input_ids=ids, target_text=" bone"),
        attributor.attribute(PROMPTS[2], target_text=" tree", config=HetaConfig(method="occlusion")),
        attributor.attribute(PROMPTS[0], target_text=" tree", config=other),
    ]
    assert [r.method for r in batch] == ["heta", "heta", "occlusion", "gradient"]
    for got, want in zip(batch, expected, strict=True):
        assert got.target.text == want.target.text
        torch.testing.assert_close(scores(got), scores(want), rtol=0, atol=0)


def test_a_bad_item_is_refused_before_any_prompt_runs_or_returned_in_place(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    seen = []
    items = [PROMPTS[0], {"text": PROMPTS[1], "target_position": 99}, PROMPTS[2]]
    with pytest.raises(InputError, match="target_position"):
        list(attributor.iter_batch(items, progress=seen.append))
    assert seen == []  # refused while checking: nothing ran
    outcomes = attributor.attribute_batch(items, progress=seen.append, errors="return")
    assert isinstance(outcomes[1], InputError) and outcomes[1].code == "target_out_of_range"
    assert [type(o).__name__ for o in outcomes] == ["AttributionResult", "InputError", "AttributionResult"]
    assert seen == sorted(seen) and seen[-1] == 1.0 and 1 / 3 in seen and 2 / 3 in seen


@pytest.mark.parametrize(
    "inputs, shared, message",
    [
        ("one prompt", {}, "list of prompts"),
        ([], {}, "empty"),
        ([PROMPTS[0]], {"text": "x"}, "cannot apply to every prompt"),
        ([PROMPTS[0]], {"temperature": 1}, "temperature"),
        ([{"text": PROMPTS[0], "colour": 1}], {}, "unknown field"),
        (torch.ones(2, 3), {}, "integers"),
    ],
)
def test_malformed_batches_name_the_problem(make_attributor, inputs, shared, message):
    with pytest.raises(InputError, match=message):
        make_attributor("gpt2").attribute_batch(inputs, **shared)


def test_mask_rows_must_match_the_prompts(make_attributor, tokenizer):
    encoding = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with pytest.raises(InputError, match="one row per prompt"):
        make_attributor("gpt2").attribute_batch(encoding["input_ids"], attention_mask=encoding["attention_mask"][:2])

"""Every bad input and config value gets a clear error with a stable code."""

import pytest
import torch

from heta_core import Attributor, ConfigError, HetaConfig, InputError

from .conftest import TEXT


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("mask", "blank", "zero, mean, token:<id>"),
        ("mask", "token:x", "zero, mean, token:<id>"),
        ("flow", "rollout", "heta, official"),
        ("normalize", "l2", "none, simplex"),
        ("strategy", "turbo", "fast, reference"),
        ("dtype", "float16", "model, float32, float64"),
        ("num_hvp_samples", 0, ">= 1"),
        ("num_hvp_samples", 2.5, ">= 1"),
        ("seed", -1, ">= 0"),
        ("beta", float("nan"), ">= 0"),
        ("gamma", -0.1, ">= 0"),
        ("memory_budget_mb", 1, ">= 16"),
        ("cuda_streams", 0, ">= 1"),
    ],
)
def test_invalid_config_names_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as error:
        HetaConfig(**{field: value})
    assert isinstance(error.value, ConfigError)
    assert field in str(error.value) and allowed in str(error.value)
    assert error.value.field == field and error.value.code == "invalid_config"


def test_config_defaults_and_round_trip():
    config = HetaConfig()
    assert (config.beta, config.gamma, config.num_hvp_samples, config.mask, config.flow) == (
        0.5,
        0.5,
        10,
        "zero",
        "heta",
    )
    assert (config.normalize, config.seed, config.strategy, config.dtype) == ("simplex", 0, "fast", "model")
    assert HetaConfig(mask="token:7").mask_token_id == 7 and config.mask_token_id is None
    assert HetaConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown config field"):
        HetaConfig.from_dict({"samples": 3})


@pytest.mark.parametrize(
    "kwargs, code, words",
    [
        ({"text": ""}, "empty_input", "empty"),
        ({"text": "   "}, "empty_input", "empty"),
        ({"text": "cat"}, "too_short", "at least 2 tokens"),
        ({"input_ids": [4]}, "too_short", "at least 2 tokens"),
        ({"input_ids": []}, "too_short", "at least 2 tokens"),
        ({}, "invalid_input", "exactly one of text, input_ids or messages"),
        ({"text": "the cat", "input_ids": [4, 5]}, "invalid_input", "exactly one"),
        ({"text": TEXT, "target_position": 0}, "target_out_of_range", "out of range"),
        ({"text": TEXT, "target_position": 12}, "target_out_of_range", "out of range"),
        ({"text": TEXT, "target_position": -12}, "target_out_of_range", "out of range"),
        ({"text": TEXT, "target_position": 2.0}, "target_out_of_range", "integer"),
        ({"input_ids": [4, 10_000]}, "invalid_input_ids", "outside the vocabulary"),
        ({"input_ids": [4, -1]}, "invalid_input_ids", "outside the vocabulary"),
        ({"input_ids": ["a", "b"]}, "invalid_input_ids", "integers"),
        ({"input_ids": ["4", "5"]}, "invalid_input_ids", "integers"),
        ({"input_ids": "45"}, "invalid_input_ids", "integers"),
        ({"input_ids": 45}, "invalid_input_ids", "integers"),
        ({"input_ids": [True, 5]}, "invalid_input_ids", "integers"),
        ({"input_ids": list(range(4, 34)) * 5}, "too_many_tokens", "reads at most 128"),
        ({"input_ids": [4.5, 5]}, "invalid_input_ids", "integers"),
        ({"input_ids": torch.zeros(2, 2, dtype=torch.long)}, "invalid_input_ids", "2 prompts"),
        ({"input_ids": torch.zeros(1, 1, 3, dtype=torch.long)}, "invalid_input_ids", "one row"),
        ({"input_ids": torch.tensor([4.0, 5.0])}, "invalid_input_ids", "integers"),
        ({"input_ids": [4, 5, 6], "attention_mask": [1, 0, 1]}, "invalid_attention_mask", "holes"),
        ({"input_ids": [4, 5, 6], "attention_mask": [1, 1]}, "invalid_attention_mask", "2 entries for 3"),
        ({"input_ids": [4, 5, 6], "attention_mask": [0, 0, 0]}, "invalid_attention_mask", "keeps no token"),
        ({"input_ids": [4, 5, 6], "attention_mask": [1, 2, 1]}, "invalid_attention_mask", "only 0 and 1"),
        ({"text": "the cat", "attention_mask": [1, 1]}, "invalid_attention_mask", "goes with input_ids"),
        ({"input_ids": {"attention_mask": [1, 1]}}, "invalid_input_ids", "no input_ids"),
        ({"text": 42}, "invalid_input", "string"),
    ],
)
def test_bad_inputs(make_attributor, kwargs, code, words):
    attributor = make_attributor("gpt2")
    with pytest.raises(InputError) as error:
        attributor.attribute(**kwargs)
    assert error.value.code == code
    assert words in str(error.value)


def test_text_needs_a_tokenizer(tiny):
    with pytest.raises(InputError) as error:
        Attributor(tiny("gpt2")).attribute("the cat")
    assert error.value.code == "no_tokenizer"


def test_negative_target_counts_from_the_end(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=1)
    assert attributor.attribute(TEXT, target_position=-1).target.position == 11
    assert attributor.attribute(TEXT, target_position=-11).target.position == 1


def test_mask_token_outside_vocabulary(make_attributor):
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        make_attributor("gpt2", mask="token:9999").attribute(TEXT)


def test_dtype_policy_never_downcasts(tiny, tokenizer):
    with pytest.raises(ConfigError, match="downcast"):
        Attributor(tiny("gpt2", dtype=torch.float64), config=HetaConfig(dtype="float32"))
    upcast = Attributor(tiny("gpt2", dtype=torch.float32), tokenizer, HetaConfig(dtype="float64", num_hvp_samples=1))
    assert upcast.model.dtype == torch.float64
    assert upcast.attribute(TEXT).meta.dtype == "float64"
    plain = Attributor(tiny("gpt2", dtype=torch.float32), tokenizer, HetaConfig(num_hvp_samples=1))
    assert plain.attribute(TEXT).meta.dtype == "float32"
    with pytest.raises(ConfigError, match="dtype"):
        plain.attribute(TEXT, config=HetaConfig(dtype="float64"))


def test_attribute_restores_parameter_grad_flags(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=1)
    attributor.model.requires_grad_(True)
    attributor.attribute(TEXT)
    assert all(p.requires_grad for p in attributor.model.parameters())
    assert all(p.grad is None for p in attributor.model.parameters())


def test_numpy_style_integers_are_accepted(make_attributor):
    import numpy as np

    attributor = make_attributor("gpt2", num_hvp_samples=1)
    result = attributor.attribute(input_ids=np.array([4, 9, 12, 30]), target_position=np.int64(2))
    assert result.target.position == 2 and [t.id for t in result.tokens] == [4, 9]


def test_what_a_tokenizer_returns_is_taken_as_it_is(make_attributor, tokenizer):
    """attribute(**tokenizer(text, return_tensors="pt")) and every other shape of the same ids give
    the result of the plain id list; padding is dropped by the attention mask."""
    import numpy as np

    attributor = make_attributor("gpt2", num_hvp_samples=2)
    ids = tokenizer(TEXT)["input_ids"]
    expected = attributor.attribute(input_ids=ids).scores
    padded = torch.tensor([[0, 0, *ids, 0]])
    forms = {
        "BatchEncoding pt": dict(**tokenizer(TEXT, return_tensors="pt")),
        "BatchEncoding positional": dict(text=tokenizer(TEXT, return_tensors="pt")),
        "BatchEncoding as input_ids": dict(input_ids=tokenizer(TEXT)),
        "1-D tensor": dict(input_ids=torch.tensor(ids)),
        "[1, T] tensor": dict(input_ids=torch.tensor([ids])),
        "numpy": dict(input_ids=np.array(ids)),
        "[1, T] numpy": dict(input_ids=np.array([ids], dtype=np.int32)),
        "tuple": dict(input_ids=tuple(ids)),
        "left and right padding": dict(input_ids=padded, attention_mask=torch.tensor([[0, 0, *[1] * len(ids), 0]])),
    }
    for name, kwargs in forms.items():
        result = attributor.attribute(**kwargs)
        assert [t.id for t in result.tokens] == ids[:-1], name
        assert torch.equal(result.scores, expected), name
    # estimate takes the same forms
    assert attributor.estimate(**tokenizer(TEXT, return_tensors="pt")) == attributor.estimate(input_ids=ids)

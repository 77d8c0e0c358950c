"""The real loading code (``from_pretrained`` by path) on models saved to a temp dir."""

import json

import pytest
import torch
from transformers import BloomConfig

from heta_core import Attributor, HetaConfig, ModelLoadError, UnsupportedArchitectureError
from heta_core.models.toymodels import random_model, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_from_pretrained_loads_safetensors_and_tokenizer(saved_llama):
    assert (saved_llama / "model.safetensors").exists()
    attributor = Attributor.from_pretrained(str(saved_llama), config=HetaConfig(num_hvp_samples=2), device="cpu")
    assert attributor.model.dtype == torch.float64  # the checkpoint's own dtype, not a silent float32
    text = "she gave him the key to the red door"
    result = attributor.attribute(text)
    assert result.meta.model == str(saved_llama)
    assert result.target.text == "door"
    for token in result.tokens:
        assert text[token.start : token.end] == token.text
    same = Attributor(tiny_model("llama"), tiny_tokenizer(), HetaConfig(num_hvp_samples=2)).attribute(text)
    torch.testing.assert_close(result.scores, same.scores)


def test_dtype_argument_is_applied(saved_llama):
    attributor = Attributor.from_pretrained(str(saved_llama), device="cpu", dtype="float32")
    assert attributor.model.dtype == torch.float32


def test_pickle_only_checkpoint_is_refused(tmp_path):
    model = tiny_model("gpt2")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        Attributor.from_pretrained(str(tmp_path), device="cpu")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        Attributor.from_pretrained(str(tmp_path / "nope"), device="cpu")
    assert error.value.code == "model_not_found" and "nope" in str(error.value)


def test_unsupported_architecture_fails_before_reading_weights(tmp_path):
    random_model(
        BloomConfig(n_layer=1, hidden_size=8, n_head=2, vocab_size=40), attn_implementation="eager"
    ).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not read")  # would fail to parse if it were read
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        Attributor.from_pretrained(str(tmp_path), device="cpu")


def test_remote_code_is_never_trusted(tmp_path):
    tiny_model("gpt2").config.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "custom-thing"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError):
        Attributor.from_pretrained(str(tmp_path), device="cpu")

import pytest
import torch

from heta_core import Attributor, HetaConfig
from heta_core.models.toymodels import tiny_model, tiny_tokenizer

TEXT = "the cat sat on the mat . the dog ate the bone"


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny random GPT-2 and its tokenizer saved to disk (for CLI and service subprocesses)."""
    path = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    tiny_model("gpt2").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def make_attributor(tokenizer):
    """A cached ``Attributor`` per (family, dtype): building models is the slow part of small tests."""
    cache = {}

    def make(family: str = "llama", dtype: torch.dtype = torch.float64, **config) -> Attributor:
        key = (family, dtype)
        if key not in cache:
            cache[key] = Attributor(tiny_model(family, dtype=dtype), tokenizer)
        attributor = cache[key]
        attributor.config = HetaConfig(**config)
        return attributor

    return make


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str = "") -> None:
    """Elementwise relative agreement (with a floor for entries that are ~0 at float32 precision)."""
    floor = 1e-6 * float(expected.abs().max())
    bad = (actual - expected).abs() > rtol * expected.abs() + floor
    assert not bad.any(), f"{what}: {actual[bad].tolist()} vs {expected[bad].tolist()}"

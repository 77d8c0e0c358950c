import os
from pathlib import Path

import pytest
import torch

from heta_core import Attributor, HetaConfig
from heta_core.models.toymodels import tiny_model, tiny_tokenizer

TEXT = "the cat sat on the mat . the dog ate the bone"
# Where every model a test builds runs: `HETA_TEST_DEVICE=cuda` (scripts/gpu-check) reruns the same
# suites on a GPU, with the same float64 comparisons. Tests take it from the `device` / `tiny`
# fixtures below (subprocesses from HETA_DEVICE, see tests/service/conftest.py), never a literal.
DEVICE = torch.device(os.environ.get("HETA_TEST_DEVICE", "cpu"))
# The team's data beside the clone (../shared/data: CI has it, a clone of this repository alone does
# not). Tests that read it carry `@pytest.mark.shared_data("file")`: deselected, with the reason
# printed, where the file is absent; a test that must always run builds its own small file instead.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs CUDA; collected only when HETA_TEST_DEVICE is a CUDA device (scripts/gpu-check)"
    )
    config.addinivalue_line(
        "markers",
        "shared_data(name): reads ../shared/data/<name> (CI has it); "
        "deselected, with the reason printed, where it is absent",
    )


def pytest_collection_modifyitems(config, items):
    # GPU-only tests are not skipped on CPU runs (CI allows no skips): they are not collected at all
    if DEVICE.type != "cuda":
        kept = [item for item in items if item.get_closest_marker("gpu") is None]
        if len(kept) != len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept
    # the same for tests of the shared data where it is absent (a clone without ../shared beside it)
    absent: dict[str, list[str]] = {}
    for item in items:
        marker = item.get_closest_marker("shared_data")
        if marker is not None and not (SHARED_DATA / marker.args[0]).is_file():
            absent.setdefault(marker.args[0], []).append(item.nodeid)
    if absent:
        names = {nodeid for nodeids in absent.values() for nodeid in nodeids}
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in names])
        items[:] = [item for item in items if item.nodeid not in names]
        config.stash[_ABSENT] = absent


_ABSENT = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for name, nodeids in config.stash.get(_ABSENT, {}).items():
        terminalreporter.write_line(
            f"deselected {len(nodeids)} test(s) of shared data: {SHARED_DATA / name} is absent (they run where the "
            f"team's ../shared/data lies beside the clone, as in CI): {', '.join(nodeids)}",
            yellow=True,
        )


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


@pytest.fixture(scope="session")
def tiny(device):
    """``tiny_model(...)`` placed on the test device."""

    def build(family: str, **kwargs):
        return tiny_model(family, **kwargs).to(device)

    return build


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
def make_attributor(tokenizer, device):
    """A cached ``Attributor`` per (family, dtype): building models is the slow part of small tests."""
    cache = {}

    def make(family: str = "llama", dtype: torch.dtype = torch.float64, **config) -> Attributor:
        key = (family, dtype)
        if key not in cache:
            cache[key] = Attributor(tiny_model(family, dtype=dtype).to(device), tokenizer)
        attributor = cache[key]
        attributor.config = HetaConfig(**config)
        attributor.speed = None  # a measured speed is another test's state (calibrate), like its config
        return attributor

    return make


@pytest.fixture(scope="session")
def hard() -> Attributor:
    """heta-demo-hard on the CPU, loaded once for the eval tests (its model tests and the suite's run)."""
    return Attributor.from_pretrained("heta-demo-hard", device="cpu")


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str = "") -> None:
    """Elementwise relative agreement (with a floor for entries that are ~0 at float32 precision)."""
    floor = 1e-6 * float(expected.abs().max())
    bad = (actual - expected).abs() > rtol * expected.abs() + floor
    assert not bad.any(), f"{what}: {actual[bad].tolist()} vs {expected[bad].tolist()}"

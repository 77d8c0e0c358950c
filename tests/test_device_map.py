"""Models split by a device map (accelerate): a tiny float64 model split over the CPU and disk offload
(every block after the first, the final norm and the head offloaded to the offload folder) gives the
same numbers as the same weights on one device — HETA's terms, every baseline, attribute_many — and
bad placements are refused before any weights are read."""

import pytest
import torch

from heta_core import METHODS, Attributor, HetaConfig
from heta_core.errors import InputError
from heta_core.models.adapters import ADAPTERS, adapter_for
from heta_core.models.toymodels import tiny_model, tiny_tokenizer

from .conftest import TEXT

FAMILIES = [a.family for a in ADAPTERS]
# every family's adapter reads its weights (W_O; W_V under flow="official") through the placement layer;
# the passes that only run the model are the same code for every family: two families cover them
RUNNERS = ["gpt2", "llama"]
every_family = pytest.mark.parametrize("pair", FAMILIES, indirect=True)
two_families = pytest.mark.parametrize("pair", RUNNERS, indirect=True)
TOL = dict(rtol=1e-10, atol=1e-10)


def split_map(model) -> dict[str, str]:
    """Embeddings and the first block on the CPU; the other blocks, the final norm and the head on disk."""
    adapter = adapter_for(model.config)
    base = model.base_model
    prefix = model.base_model_prefix
    mapping = {}
    for name, _ in base.named_children():
        if name == adapter.blocks_attr:
            count = len(adapter.blocks(model))
            mapping.update({f"{prefix}.{name}.{i}": "cpu" if i == 0 else "disk" for i in range(count)})
        else:
            mapping[f"{prefix}.{name}"] = "disk" if "norm" in name or name.startswith("ln_") else "cpu"
    mapping.update({name: "disk" for name, _ in model.named_children() if name != prefix})
    return mapping


@pytest.fixture(scope="module")
def pair(request, tmp_path_factory):
    """(the model on one device, the same checkpoint split over CPU + disk)."""
    path = tmp_path_factory.mktemp(f"tiny-{request.param}")
    model = tiny_model(request.param, num_hidden_layers=3)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    whole = Attributor.from_pretrained(str(path), device="cpu")
    mapping = split_map(whole.model)
    split = Attributor.from_pretrained(
        str(path), device_map=mapping, offload_folder=str(tmp_path_factory.mktemp("offload"))
    )
    return whole, split


@every_family
def test_the_split_model_really_offloads(pair):
    whole, split = pair
    assert whole.placement.device_map == {}
    assert split.placement.device_map["disk"] >= 3 and split.placement.device_map["cpu"] >= 2
    assert split.placement.dtype == "float64"
    offloaded = [name for name, p in split.model.named_parameters() if p.device.type == "meta"]
    assert any(".1." in name for name in offloaded) and len(offloaded) > len(list(split.model.parameters())) // 3
    assert split.device == torch.device("cpu")


def _terms(result):
    return {name: getattr(result, name) for name in ("scores", "flow", "hessian", "kl")}


HETA_VARIANTS = {
    "default": {},
    "official_flow": {"flow": "official"},
    "curvature_layers": {"curvature_layers": 1},  # differentiates a block's input: calls the block directly
    "low_rank": {"low_rank": 6},
    "reference": {"strategy": "reference"},
    "ggn": {"curvature": "ggn"},
}


@pytest.mark.parametrize("variant", ["default", "official_flow"])
@every_family
def test_heta_flow_variants_equal_the_unsplit_model(pair, variant):
    _assert_heta_equal(pair, variant)


@pytest.mark.parametrize("variant", [v for v in HETA_VARIANTS if v not in ("default", "official_flow")])
@two_families
def test_heta_terms_equal_the_unsplit_model(pair, variant):
    _assert_heta_equal(pair, variant)


def _assert_heta_equal(pair, variant):
    whole, split = pair
    config = HetaConfig(num_hvp_samples=3, seed=1, **HETA_VARIANTS[variant])
    expected, actual = whole.attribute(TEXT, config=config), split.attribute(TEXT, config=config)
    for name, value in _terms(expected).items():
        assert float(value.abs().max()) > 0, name
        torch.testing.assert_close(getattr(actual, name).double(), value.double(), **TOL, msg=name)
    # the document's numbers (the tensors above are float32 views of them): M_T, S, I and the score
    for name in ("score", "flow", "hessian", "kl"):
        exact = [getattr(t, name) for t in expected.tokens]
        assert [getattr(t, name) for t in actual.tokens] == pytest.approx(exact, rel=1e-10, abs=1e-12), name


@pytest.mark.parametrize("method", [m for m in METHODS if m != "heta"])
@two_families
def test_every_baseline_equals_the_unsplit_model(pair, method):
    whole, split = pair
    config = HetaConfig(method=method, ig_steps=8)
    expected, actual = whole.attribute(TEXT, config=config), split.attribute(TEXT, config=config)
    assert float(expected.scores.abs().max()) > 0
    assert [t.score for t in actual.tokens] == pytest.approx([t.score for t in expected.tokens], rel=1e-10, abs=1e-12)


@two_families
def test_attribute_many_equals_the_unsplit_model(pair):
    whole, split = pair
    calls = [
        {"text": TEXT, "config": HetaConfig(num_hvp_samples=2)},
        {
            "text": "the dog ate the bone",
            "target_text": " .",
            "target_mode": "each",
            "config": HetaConfig(num_hvp_samples=2),
        },
        {"text": "a bird can fly over the tree", "config": HetaConfig(method="occlusion")},
    ]
    expected, actual = whole.attribute_many(calls), split.attribute_many(calls)
    for want, got in zip(expected, actual, strict=True):
        assert not isinstance(got, Exception), got
        torch.testing.assert_close(got.scores.double(), want.scores.double(), **TOL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device": "cpu", "device_map": "auto"}, "not both"),
        ({"device_map": {"model.layers.0": "disk"}}, "needs an offload folder"),
        ({"device_map": "everywhere"}, "device map must be one of"),
        ({"device_map": "[1, 2]"}, "must be an object"),
        ({"device_map": {}}, "empty"),
        ({"device_map": {"model.layers.0": "cuda:99"}}, "no such CUDA device"),
        ({"device_map": {"model.layers.0": 3.5}}, "is not a device"),
        ({"offload_folder": "/tmp/x"}, "only used with a device map"),
    ],
)
def test_bad_placements_are_refused_before_loading(kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        Attributor.from_pretrained("heta-demo", **kwargs)
    assert error.value.code == "invalid_device_map"


def test_a_device_map_file_is_read(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{"transformer": "cpu", "lm_head": "cpu"}')
    attributor = Attributor.from_pretrained("heta-demo", device_map=f"@{path}")
    assert attributor.device == torch.device("cpu")
    assert attributor.placement.device_map == {}  # one device: not split
    with pytest.raises(InputError, match="cannot read device map file"):
        Attributor.from_pretrained("heta-demo", device_map=f"@{tmp_path / 'missing.json'}")

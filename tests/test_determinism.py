import torch

from .conftest import TEXT


def test_same_seed_gives_identical_results(make_attributor):
    attributor = make_attributor("gpt_neox", num_hvp_samples=3, seed=11)
    first, second = attributor.attribute(TEXT), attributor.attribute(TEXT)
    for name in ("scores", "flow", "hessian", "kl"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name


def test_another_seed_changes_only_the_hessian_term(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=3, seed=1)
    one = attributor.attribute(TEXT)
    two = attributor.attribute(TEXT, config=attributor.config.replace(seed=2))
    assert torch.equal(one.flow, two.flow)
    assert torch.equal(one.kl, two.kl)
    assert not torch.equal(one.hessian, two.hessian)
    assert not torch.equal(one.scores, two.scores)
    assert two.meta.config["seed"] == 2

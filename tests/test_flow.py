"""M_T: the fast forms against literal loops and against hand computations on a one-layer model."""

import pytest
import torch

from heta_core.methods.heta.flow import (
    heta_flow,
    heta_flow_reference,
    layer_value_norms,
    official_flow,
    official_flow_reference,
)
from heta_core.models.adapters import HeadLayout, adapter_for, eager_attention
from heta_core.runtime.trace import run_trace

IDS = [5, 9, 14, 20, 7, 30, 11, 3]


def _inputs(model, mode, predicting=1):
    """(per-head attentions [H, T, T], head means, rows at the predicting positions, value norms)."""
    adapter, layout = adapter_for(model.config), HeadLayout.from_config(model.config)
    embeds = model.get_input_embeddings()(torch.tensor(IDS, device=model.device)).detach()
    with eager_attention(model):
        trace = run_trace(model, adapter, layout, embeds, predicting=predicting, keep_cache=False, full_attention=True)
    blocks = [adapter.attention(b) for b in adapter.blocks(model)]
    norms = layer_value_norms(blocks, adapter, layout, trace, mode=mode)
    return trace.attentions, trace.mean_attentions, trace.attention_rows, norms


@pytest.mark.parametrize("family", ["gpt2", "llama", "phi3"])
def test_fast_flow_forms_equal_literal_loops(tiny, family):
    model = tiny(family, num_hidden_layers=3) if family != "gpt2" else tiny(family, n_layer=3)
    attentions, means, rows, norms = _inputs(model, "heta", predicting=3)
    a, b = heta_flow(means, rows, norms), heta_flow_reference(means, rows, norms)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    attentions, means, rows, norms = _inputs(model, "official", predicting=3)
    c, d = official_flow(attentions, norms, 3), official_flow_reference(attentions, norms, 3)
    torch.testing.assert_close(c, d, rtol=1e-10, atol=1e-14)
    for flow in (a, c):
        assert flow.shape == (3, len(IDS))
        torch.testing.assert_close(flow.sum(-1), torch.ones(3, dtype=flow.dtype, device=flow.device))
        assert float(flow.min()) >= 0
        # row j ends at its own position: nothing flows from later tokens
        assert float(flow[0, -2:].abs().max()) == 0 and float(flow[1, -1].abs()) == 0


def test_one_layer_heta_flow_by_hand(tiny):
    """With one layer R^{(0)} = I, so M_T[i] ∝ Σ_h A^{(h)}[p, i] · v^{(h)}_i."""
    model = tiny("llama", num_hidden_layers=1)
    attentions, means, rows, norms = _inputs(model, "heta")
    p = len(IDS) - 1
    expected = (attentions[0][:, p, :] * norms[0]).sum(0)
    torch.testing.assert_close(heta_flow(means, rows, norms)[0], expected / expected.sum())


def test_two_layer_heta_flow_by_hand(tiny):
    """Layer 2's flow passes through layer 1's residual-aware rollout 0.5·mean_h A + 0.5·I."""
    model = tiny("gpt2", n_layer=2)
    (a1, a2), means, rows, (v1, v2) = _inputs(model, "heta")
    p = len(IDS) - 1
    eye = torch.eye(len(IDS), dtype=a1.dtype, device=a1.device)
    rollout = 0.5 * a1.mean(0) + 0.5 * eye  # rows already sum to 1
    expected = (a1[:, p, :] * v1).sum(0) + (a2[:, p, :] * v2).sum(0) @ rollout
    torch.testing.assert_close(heta_flow(means, rows, [v1, v2])[0], expected / expected.sum())


def test_one_layer_official_flow_by_hand(tiny):
    model = tiny("gpt2", n_layer=1)
    attentions, _, _, norms = _inputs(model, "official")
    p = len(IDS) - 1
    eye = torch.eye(len(IDS), dtype=attentions[0].dtype, device=attentions[0].device)
    chains = 0.5 * attentions[0] + 0.5 * eye
    expected = (chains[:, p, :] * norms[0]).sum(0)
    torch.testing.assert_close(official_flow(attentions, norms, 1)[0], expected / expected.sum())


def test_flow_modes_differ(make_attributor):
    heta = make_attributor("gpt2").attribute(input_ids=IDS)
    official = make_attributor("gpt2", flow="official").attribute(input_ids=IDS)
    assert not torch.allclose(heta.flow, official.flow)
    torch.testing.assert_close(heta.hessian, official.hessian)  # only M_T depends on the flow mode

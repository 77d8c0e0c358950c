"""The colours and bars that show a result's numbers, in a real Chromium: the bar chart of the HETA
components' shares equals the result's fields, and the heatmap's text keeps a contrast of at least 4.5
on every background it can have."""

import pytest

from ..browser import explained, luminance, result_of

SHARES = ("flow", "hessian", "kl")  # the bar chart: M_T, S, I


def contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two ``rgb(...)`` colours."""
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def share_text(share: float | None) -> str:
    """The page's share format, written independently: a percent with one decimal (ties away from
    zero, as JavaScript's toFixed), "<0.1 %" for tiny ones."""
    from decimal import ROUND_HALF_UP, Decimal

    if share is None:
        return ""
    percent = 100 * share
    if percent != 0 and abs(percent) < 0.1:
        return "<0.1 %" if percent > 0 else ">−0.1 %"
    return f"{Decimal(percent).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}".replace("-", "−") + " %"


def bars(page) -> tuple[str, list[dict]]:
    """The bar chart's caption and bars, read at once (a hover redraws them)."""
    return page.eval_on_selector(
        "#results .hm-shares",
        "box => [box.querySelector('.hm-shares-unit').textContent, [...box.querySelectorAll('.hm-bar-row')].map(r => "
        "({component: r.dataset.component, label: r.querySelector('.hm-bar-label').textContent, share: "
        "r.querySelector('.hm-share').textContent, width: r.querySelector('.hm-bar-fill').style.width, drawn: "
        "r.querySelector('.hm-bar-fill').getBoundingClientRect().width / "
        "r.querySelector('.hm-bar').getBoundingClientRect().width}))]",
    )


def assert_bars(page, units: list[dict], index: int, over: str) -> None:
    """The bar chart shows, for the focused unit ``index``, its share of each HETA component's total
    over the view's units (heatmap.js drawShares: value / Σ|value|)."""
    label, shown = bars(page)
    assert label == f'"{units[index]["text"]}" holds this share of each term over the {over}:'
    assert [(b["component"], b["label"]) for b in shown] == [
        ("flow", "M_T (flow)"),
        ("hessian", "S (curvature)"),
        ("kl", "I (KL impact)"),
    ]
    for bar, component in zip(shown, SHARES, strict=True):
        total = sum(abs(u[component]) for u in units)
        share = units[index][component] / total
        assert bar["share"] == share_text(share), (component, bar, share)
        assert float(bar["width"].removesuffix("%")) == pytest.approx(100 * min(1, max(0, share)), rel=1e-5)
        assert bar["drawn"] == pytest.approx(min(1, max(0, share)), abs=0.01)


def test_component_share_bars_equal_the_result_fields(servers, open_page):
    server = servers["plain"]
    view = open_page(server)
    page = view.page
    page.click("#explain")  # the default heta-demo example
    (job_id,) = explained(page)
    result = result_of(server, job_id)
    tokens = result["tokens"]
    assert all(t[c] is not None for t in tokens for c in SHARES)
    # M_T is a share of the flow already: over the tokens it sums to 1
    assert sum(t["flow"] for t in tokens) == pytest.approx(1, abs=1e-6)
    # at first the bars are the top-scored token's (the darkest)
    top = min(range(len(tokens)), key=lambda i: (-tokens[i]["score"], i))
    assert_bars(page, tokens, top, "tokens")
    view.shot("msg-04-component-share-bars", full_page=False)
    # hovering another token shows its shares; so does the word view's top word
    page.hover("#results .hm-text .hm-unit >> nth=0")
    assert_bars(page, tokens, 0, "tokens")
    page.mouse.move(0, 0)  # off the text: the word view's first unit would be hovered when it is drawn
    page.select_option("#results .hm-view select", "word")
    words = result["aggregates"]["word"]
    assert_bars(page, words, min(range(len(words)), key=lambda i: (-words[i]["score"], i)), "words")
    page.hover("#results .hm-text .hm-unit >> nth=2")
    assert_bars(page, words, 2, "words")
    view.shot("msg-05-component-share-bars-word-view", full_page=False)


def span_contrasts(page, card: str) -> list[tuple[str, float]]:
    colours = page.eval_on_selector_all(
        f"{card} .hm-text .hm-unit",
        "units => units.map(u => [u.textContent, getComputedStyle(u).color, getComputedStyle(u).backgroundColor])",
    )
    assert colours
    return [(text, contrast(ink, paper)) for text, ink, paper in colours]


def test_heatmap_text_contrast_is_at_least_4_5(servers, open_page):
    server = servers["plain"]
    view = open_page(server)
    page = view.page
    page.click("#examples button:has-text('integrated gradients')")  # sequential (HETA) and diverging (IG) scales
    explained(page, count=2)
    checked, lowest = 0, float("inf")
    for method in ("heta", "integrated_gradients"):
        card = f"#results .result[data-method='{method}']"
        components = page.eval_on_selector_all(
            f"{card} .hm-components input", "inputs => inputs.map(i => i.value)"
        ) or ["score"]
        granularities = page.eval_on_selector_all(
            f"{card} .hm-view select option", "options => options.map(o => o.value)"
        )
        for component in components:
            if component != "score" or len(components) > 1:
                page.check(f"{card} input[value='{component}']")
            for granularity in granularities:
                page.select_option(f"{card} .hm-view select", granularity)
                ratios = span_contrasts(page, card)
                assert [(text, round(ratio, 2)) for text, ratio in ratios if ratio < 4.5] == [], (
                    method,
                    component,
                    granularity,
                )
                lowest = min(lowest, *(ratio for _, ratio in ratios))
                checked += 1
    assert checked == 4 * 3 + 1 * 3  # HETA: 4 components × 3 views; IG: its score × 3 views
    view.shot("msg-06-contrast-heta-vs-ig")
    print(f"heatmap spans: lowest text contrast {lowest:.3f}")


def test_every_colour_of_the_scale_has_text_contrast_of_at_least_4_5(servers, open_page):
    """The whole colour scale, not only the values one result happened to have: each background the
    renderer (window.HetaAttribution.colour, as the page loads it) can give a unit, with the text colour
    it picks for it, as the browser computes them — sequential (0..1) and diverging (−1..1)."""
    view = open_page(servers["plain"])
    sweep = view.page.evaluate(
        """() => {
          const probe = document.createElement("span");
          document.body.append(probe);
          const out = [];
          for (const signed of [false, true]) {
            for (let i = signed ? -1000 : 0; i <= 1000; i++) {
              const c = HetaAttribution.colour(i / 1000, 1, signed);
              probe.style.cssText = `background-color: ${c.css}; color: ${c.text}`;
              const style = getComputedStyle(probe);
              out.push([i / 1000, signed, style.color, style.backgroundColor]);
            }
          }
          probe.remove();
          return out;
        }"""
    )
    assert len(sweep) == 1001 + 2001
    ratios = [(value, signed, ink, paper, contrast(ink, paper)) for value, signed, ink, paper in sweep]
    low = [(*r[:4], round(r[4], 2)) for r in ratios if r[4] < 4.5]
    assert low == [], (
        f"{len(low)} of {len(sweep)} scale colours have a text contrast below 4.5, e.g. {low[:: max(1, len(low) // 6)]}"
    )
    print(f"scale: lowest text contrast {min(r[4] for r in ratios):.3f}")

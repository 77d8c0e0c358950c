/* The HETA heatmap: the one renderer of the result document (docs/result.md) behind the
   <heta-attribution> element, which the explorer page, the HTML report and dashboards use. It reads
   only the document's fields — tokens, aggregates, targets, diagnostics, meta, warnings — and loads
   nothing: no network, no dependencies. */

export const COMPONENTS = {
  score: { label: "score", help: "the attribution" },
  flow: { label: "M_T (flow)", help: "share of the attention–value flow into the target (sums to 1)" },
  hessian: { label: "S (curvature)", help: "Hessian sensitivity of log p(target) to the token" },
  kl: { label: "I (KL impact)", help: "KL divergence in nats when the token is masked" },
};
export const VIEWS = { token: "tokens", word: "words", sentence: "sentences", span: "spans", message: "messages" };
const TOP = 10;

// ------------------------------------------------------------------ colour

// OKLCH → sRGB: lightness falls linearly with |value|, so equal steps look equal (perceptually
// uniform), and the strongest unit is always the darkest.
function oklch(L, C, h) {
  const a = C * Math.cos((h * Math.PI) / 180), b = C * Math.sin((h * Math.PI) / 180);
  const l = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3;
  const m = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3;
  const s = (L - 0.0894841775 * a - 1.291485548 * b) ** 3;
  const linear = [
    4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
    -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
    -0.0041960863 * l - 0.7034186147 * m + 1.707614701 * s,
  ].map((c) => Math.min(1, Math.max(0, c)));
  const rgb = linear.map((c) => Math.round(255 * (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055)));
  const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  // white text below this luminance: both text colours keep a contrast ratio of about 4.5:1
  return { css: `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`, text: luminance < 0.18 ? "#ffffff" : "#000000" };
}

/** Colour of ``value`` on a scale up to ``max``: sequential (white → blue) or diverging (blue ← white → red). */
export function colour(value, max, signed) {
  if (value === null || value === undefined || !Number.isFinite(value) || !(max > 0)) return oklch(0.98, 0, 0);
  const t = Math.max(-1, Math.min(1, value / max));
  const strength = signed ? Math.abs(t) : Math.max(0, t);
  const hue = signed ? (t < 0 ? 255 : 35) : 265;
  return oklch(0.98 - 0.56 * strength, 0.125 * strength, hue);
}

// ------------------------------------------------------------------ numbers for people

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

/** 3 significant digits; outside [0.001, 100000) as m × 10ⁿ (never a bare "1.9e-07"). */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size >= 1e-3 && size < 1e5) return String(Number(value.toPrecision(3)));
  let exponent = Math.floor(Math.log10(size));
  let mantissa = Number((value / 10 ** exponent).toPrecision(3));
  if (Math.abs(mantissa) >= 10) {
    mantissa /= 10;
    exponent += 1;
  }
  const power = String(exponent).split("").map((c) => SUPERSCRIPT[c]).join("");
  return `${mantissa} × 10${power}`;
}

/** A probability: 3 significant digits kept (1.00, 0.940), tiny ones as m × 10ⁿ. */
export function formatProbability(p) {
  if (p === null || p === undefined) return "–";
  return Math.abs(p) >= 1e-3 ? p.toPrecision(3) : formatNumber(p);
}

// "from 1.00 to 1.00" says nothing: add digits until the two probabilities differ (up to 8)
function formatProbabilities(a, b) {
  for (let digits = 3; digits <= 8; digits++) {
    if (a === null || b === null || a === b || Math.abs(a) < 1e-3 || Math.abs(b) < 1e-3) break;
    if (a.toPrecision(digits) !== b.toPrecision(digits)) return [a.toPrecision(digits), b.toPrecision(digits)];
  }
  return [formatProbability(a), formatProbability(b)];
}

export function formatShare(share) {
  if (share === null || !Number.isFinite(share)) return "";
  const percent = 100 * share;
  if (percent !== 0 && Math.abs(percent) < 0.1) return percent > 0 ? "<0.1 %" : ">−0.1 %";
  return `${percent.toFixed(1).replace("-", "−")} %`;
}

// ------------------------------------------------------------------ rank agreement

/** Positions best first (ties: earlier position first; nulls last), as the engine ranks. */
export function ranking(values) {
  return values
    .map((v, i) => [v === null || !Number.isFinite(v) ? -Infinity : v, i])
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .map(([, i]) => i);
}

function averageRanks(values) {
  const order = values.map((v, i) => [v, i]).sort((a, b) => a[0] - b[0]);
  const ranks = new Array(values.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) ranks[order[k][1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return ranks;
}

/** Spearman's ρ: Pearson's correlation of average ranks (ties share their mean rank). */
export function spearman(a, b) {
  const pairs = a.map((x, i) => [x, b[i]]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pairs.length < 2) return null;
  const ra = averageRanks(pairs.map((p) => p[0])), rb = averageRanks(pairs.map((p) => p[1]));
  const mean = (ra.length + 1) / 2;
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i] - mean) * (rb[i] - mean);
    da += (ra[i] - mean) ** 2;
    db += (rb[i] - mean) ** 2;
  }
  return da && db ? num / Math.sqrt(da * db) : null;
}

/** |top-k(a) ∩ top-k(b)| / k. */
export function topOverlap(a, b, k) {
  const size = Math.min(k, a.length);
  const top = new Set(ranking(a).slice(0, size));
  return ranking(b).slice(0, size).filter((i) => top.has(i)).length / size;
}

// ------------------------------------------------------------------ the document

function isEach(result) {
  return result.target_mode === "each";
}

/** The units of a view: tokens, or the segments of result.aggregates[view]. */
export function units(result, view) {
  if (view === "token") {
    return result.tokens.map((t) => ({ kind: "token", label: t.text ?? String(t.id), start: t.start, end: t.end, positions: [t.position], item: t }));
  }
  return (result.aggregates[view] || []).map((s) => ({
    kind: view, label: s.text ?? (s.role ? `${s.role} message ${s.index}` : `#${s.index}`), start: s.start, end: s.end,
    positions: s.tokens, item: s,
  }));
}

export function valueOf(unit, component, row) {
  const value = unit.item[component];
  return Array.isArray(value) ? value[row] ?? null : value ?? null;
}

function available(result) {
  const components = ["score"];
  // HETA's terms, those a partial result already holds
  for (const c of ["flow", "hessian", "kl"]) if (result.tokens.some((t) => t[c] !== null && t[c] !== undefined)) components.push(c);
  const views = ["token", ...Object.keys(VIEWS).filter((v) => v !== "token" && (result.aggregates[v] || []).length)];
  return { components, views };
}

const STAGE_NAMES = { flow: "flow", kl: "KL impact", hessian: "curvature", diagnostics: "diagnostics" };

/** What a partial result holds and what is still running, in words (null for a final result). */
export function partialNote(result) {
  if (!result.partial) return null;
  const done = result.stages_done || [];
  const names = done.map((s) => STAGE_NAMES[s] || s);
  const stages = result.method === "heta" ? ["flow", "kl", "hessian"] : ["baseline"];
  const left = stages.filter((s) => !done.includes(s)).map((s) => STAGE_NAMES[s] || s);
  const stopped = result.meta.plan && result.meta.plan.stopped;
  if (stopped) return `Stopped by its time budget after ${names.join(" + ")}: the ${left.join(" and ") || "diagnostics"} never ran; the score is estimated from what was done.`;
  const pending = left.length ? `${left.join(" and ")} still running` : "diagnostics still running";
  return `Partial result: ${names.join(" + ")}, ${pending} — this map is refined in place when the job ends.`;
}

/** What the targets ``indices`` say: their slice of the text (spaces included) when offsets are known. */
function targetText(result, indices) {
  const first = result.targets[indices[0]], last = result.targets[indices[indices.length - 1]];
  if (result.text !== null && first.start !== null && last.end !== null) return result.text.slice(first.start, last.end);
  return indices.map((i) => result.targets[i].text ?? String(result.targets[i].id)).join(" ");
}

// ------------------------------------------------------------------ checking a document

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

/** ``input`` (a result document, or its JSON text) made ready to draw: the optional fields filled in. Throws an Error whose message says,
 * for people, what is wrong with a document this renderer cannot draw. */
export function checkDocument(input) {
  let doc = input;
  if (typeof doc === "string") {
    try {
      doc = JSON.parse(doc);
    } catch (error) {
      throw new Error(`the result is not JSON (${error.message})`);
    }
  }
  if (!isObject(doc)) throw new Error(`the result must be a JSON object, not ${doc === null ? "null" : Array.isArray(doc) ? "a list" : typeof doc}`);
  const wrong = [];
  if (typeof doc.method !== "string") wrong.push("“method” (a string)");
  if (!Array.isArray(doc.tokens) || !doc.tokens.every((t) => isObject(t) && Number.isInteger(t.position))) wrong.push("“tokens” (a list of tokens with a position)");
  if (!Array.isArray(doc.targets) || !doc.targets.length || !doc.targets.every(isObject)) wrong.push("“targets” (a non-empty list)");
  if (!isObject(doc.meta) || typeof doc.meta.model !== "string") wrong.push("“meta.model”");
  if (doc.aggregates !== undefined && !isObject(doc.aggregates)) wrong.push("“aggregates” (an object)");
  if (doc.warnings !== undefined && !(Array.isArray(doc.warnings) && doc.warnings.every(isObject))) wrong.push("“warnings” (a list of warnings)");
  if (wrong.length) throw new Error(`this is not a HETA result document: it lacks ${wrong.join(", ")}`);
  return {
    ...doc, text: doc.text ?? null, aggregates: doc.aggregates ?? {}, warnings: doc.warnings ?? [],
    target_mode: doc.target_mode ?? "sum", diagnostics: doc.diagnostics ?? null,
  };
}

// ------------------------------------------------------------------ DOM helpers

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let instances = 0;

/**
 * Renders ``result`` into ``container``. Options: ``methods`` ({name: {signed, summary}}),
 * ``title`` (a heading), ``onSelect(unit)`` (Enter or click on a token), ``compact`` (no matrix),
 * ``state`` (the component, view and row to start from: a partial result refined in place keeps
 * what the reader chose). Returns the view: {state, set(changes), values(), units(), canvas()}.
 */
export function render(container, result, options = {}) {
  const id = `hm${++instances}`;
  const methods = options.methods || {};
  const signed = Boolean((methods[result.method] || {}).signed);
  const { components, views } = available(result);
  const start = options.state || {};
  const state = {
    component: components.includes(start.component) ? start.component : "score",
    view: views.includes(start.view) ? start.view : "token",
    row: Number.isInteger(start.row) && start.row < result.targets.length ? start.row : 0,
    focus: null,
  };
  const note = partialNote(result);
  const rows = isEach(result) ? result.targets.length : 1;

  container.replaceChildren();
  container.classList.add("heta-heatmap");
  const tooltip = el("div", { class: "hm-tooltip", role: "tooltip", id: `${id}-tip`, hidden: true });

  // header: what was explained, by which method
  const targetsLabel = targetText(result, result.targets.map((_, j) => j));
  const logprob = result.targets.reduce((sum, t) => sum + (t.logprob ?? NaN), 0);
  const header = el(
    "div", { class: "hm-header" },
    options.title ? el("h3", {}, options.title) : null,
    el("p", { class: "hm-what" },
      el("strong", {}, result.method), " explains ", el("q", { class: "hm-target" }, targetsLabel),
      ` (${isEach(result) ? "each target token separately" : result.targets.length > 1 ? "the span as a whole" : "the next token"}; `,
      `p = ${formatProbability(Math.exp(logprob))}) · ${result.meta.model}`),
    el("p", { class: "hm-summary" }, (methods[result.method] || {}).summary || "",
      signed ? " — signed: blue works against the target, red for it" : ""),
    ...result.warnings.map((w) => el("p", { class: "hm-warning", role: "note" }, `⚠ ${w.message}`)),
    note ? el("p", { class: "hm-partial", role: "status", "data-stages": (result.stages_done || []).join(",") }, note) : null,
  );

  // controls: component, view, row
  const controls = el("div", { class: "hm-controls" });
  if (components.length > 1) {
    controls.append(el("fieldset", { class: "hm-components" }, el("legend", {}, "Show"),
      components.map((c) => el("label", { title: COMPONENTS[c].help },
        el("input", { type: "radio", name: `${id}-component`, value: c, checked: c === state.component,
          onchange: () => set({ component: c }) }), ` ${COMPONENTS[c].label}`))));
  }
  if (views.length > 1) {
    controls.append(el("label", { class: "hm-view" }, "View ",
      el("select", { name: `${id}-view`, onchange: (e) => set({ view: e.target.value }) },
        views.map((v) => el("option", { value: v, selected: v === state.view }, VIEWS[v])))));
  }
  if (rows > 1) {
    controls.append(el("label", { class: "hm-row" }, "Target ",
      el("select", { name: `${id}-row`, onchange: (e) => set({ row: Number(e.target.value) }) },
        result.targets.map((t, j) => el("option", { value: j }, `${j + 1}: "${t.text ?? t.id}"`)))));
  }

  const legend = el("div", { class: "hm-legend", "aria-label": "colour scale" });
  const text = el("div", { class: "hm-text", tabindex: 0, role: "group", "aria-describedby": `${id}-help`,
    onkeydown: onKey, onmouseleave: () => hideTip() });
  // the same words wherever the element is: a host that acts on a selected token says so itself
  const help = el("p", { class: "hm-help", id: `${id}-help` }, "Hover or use ←/→ on the text to read every number of a unit.");
  const topList = el("ol", { class: "hm-top" });
  const shares = el("div", { class: "hm-shares" });
  const faithfulness = el("div", { class: "hm-diagnostics" });
  const matrix = el("div", { class: "hm-matrix" });

  const side = el("div", { class: "hm-side" },
    el("section", {}, el("h4", {}, "Top units"), topList),
    components.length > 1 ? el("section", {}, el("h4", {}, "Components of the focused unit"), shares) : null);
  const main = el("div", { class: "hm-main" }, text, help,
    el("section", { class: "hm-trust-section" }, el("h4", {}, "Trust: how faithful is this attribution?"), faithfulness));
  container.append(header, controls, legend, el("div", { class: "hm-body" }, main, side));
  if (rows > 1 && !options.compact) {
    container.append(el("section", { class: "hm-matrix-section" }, el("h4", {}, "Prompt × target matrix"), matrix));
  }
  container.append(tooltip);

  let current = [];

  function values(component = state.component, view = state.view, row = state.row) {
    return units(result, view).map((u) => valueOf(u, component, row));
  }

  function scaleMax(list) {
    return Math.max(0, ...list.filter(Number.isFinite).map(Math.abs));
  }

  function total(list) {
    return list.filter(Number.isFinite).reduce((s, v) => s + Math.abs(v), 0);
  }

  function drawLegend(max) {
    const low = signed ? -max : 0;
    const stops = Array.from({ length: 11 }, (_, i) => colour(low + ((max - low) * i) / 10, max, signed).css);
    legend.replaceChildren(
      el("span", { class: "hm-legend-label" }, `${COMPONENTS[state.component].label}${signed ? " (diverging)" : ""}`),
      el("span", { class: "hm-legend-scale" },
        el("span", { class: "hm-legend-bar", style: `background: linear-gradient(to right, ${stops.join(", ")})` }),
        el("span", { class: "hm-legend-ticks" },
          [low, (low + max) / 2, max].map((v) => el("span", { class: "hm-tick" }, formatNumber(v))))),
      el("span", { class: "hm-muted" }, signed ? "red supports the target, blue works against it" : "darker = mattered more"),
    );
  }

  function unitSpan(unit, value, max, sum, index) {
    const c = colour(value, max, signed);
    const share = sum > 0 && Number.isFinite(value) ? value / sum : null;
    return el("span", {
      class: "hm-unit", tabindex: -1, "data-index": index, "data-position": unit.positions.join(" "),
      "data-value": value === null ? "null" : String(value), "data-share": share === null ? "" : String(share),
      style: `background-color: ${c.css}; color: ${c.text}`,
      "aria-label": `${unit.label}: ${formatNumber(value)} ${formatShare(share)}`,
      onmouseenter: () => focusUnit(index, false), onclick: () => select(index),
      onfocus: () => focusUnit(index, false),
    }, unit.label);
  }

  function drawText() {
    current = units(result, state.view);
    const list = current.map((u) => valueOf(u, state.component, state.row));
    const max = scaleMax(list), sum = total(list);
    drawLegend(max);
    const nodes = [];
    const source = result.text;
    const withOffsets = source !== null && current.every((u) => u.start !== null && u.end !== null);
    let cursor = 0;
    const order = current.map((u, i) => i);
    if (withOffsets) order.sort((a, b) => current[a].start - current[b].start);
    for (const i of order) {
      const unit = current[i];
      if (withOffsets) {
        if (unit.start > cursor) nodes.push(source.slice(cursor, unit.start));
        cursor = Math.max(cursor, unit.end);
      } else if (nodes.length) nodes.push(" ");
      nodes.push(unitSpan(unit, list[i], max, sum, i));
    }
    result.targets.forEach((t, j) => {
      if (withOffsets && t.start !== null) {
        if (t.start > cursor) nodes.push(source.slice(cursor, t.start));
        cursor = Math.max(cursor, t.end);
      } else nodes.push(" ");
      const active = !isEach(result) || j === state.row;
      nodes.push(el("span", { class: `hm-target-token${active ? " hm-active" : ""}`,
        title: `explained token ${j + 1}: log p = ${formatNumber(t.logprob)}` }, t.text ?? String(t.id)));
    });
    text.replaceChildren(...nodes);
    const first = text.querySelector(".hm-unit");
    if (first) first.tabIndex = 0;
    drawTop(list, sum);
    focusUnit(state.focus ?? ranking(list)[0] ?? 0, false, true);
  }

  function drawTop(list, sum) {
    const top = ranking(list).slice(0, Math.min(TOP, list.length));
    topList.replaceChildren(...top.map((i) => el("li", { "data-index": i },
      el("span", { class: "hm-top-label" }, current[i].label), " ",
      el("span", { class: "hm-number" }, formatNumber(list[i])), " ",
      el("span", { class: "hm-share" }, sum > 0 ? `(${formatShare(list[i] / sum)})` : ""))));
  }

  function numbersOf(index) {
    const unit = current[index];
    return components.map((c) => {
      const list = current.map((u) => valueOf(u, c, state.row));
      const sum = total(list);
      const value = list[index];
      return { component: c, value, share: sum > 0 && Number.isFinite(value) ? value / sum : null, unit };
    });
  }

  function focusUnit(index, move, quiet) {
    if (!current[index]) return;
    state.focus = index;
    const spans = text.querySelectorAll(".hm-unit");
    spans.forEach((s) => (s.tabIndex = Number(s.dataset.index) === index ? 0 : -1));
    const span = text.querySelector(`.hm-unit[data-index="${index}"]`);
    if (move && span) span.focus();
    drawShares(index);
    if (!quiet && span) showTip(index, span);
  }

  function showTip(index, span) {
    const unit = current[index];
    const item = unit.item;
    const rowsOf = numbersOf(index).map((n) => el("tr", { "data-component": n.component },
      el("th", { scope: "row" }, COMPONENTS[n.component].label),
      el("td", { class: "hm-number" }, formatNumber(n.value)),
      el("td", { class: "hm-share" }, formatShare(n.share))));
    const where = unit.kind === "token"
      ? `position ${item.position} · id ${item.id}${item.role ? ` · ${item.role} (message ${item.message})` : ""}${item.template ? " · template" : ""}${item.special ? " · special" : ""}`
      : `${unit.kind} ${item.index} · ${item.tokens.length} token${item.tokens.length === 1 ? "" : "s"}${item.role ? ` · ${item.role}` : ""}`;
    tooltip.replaceChildren(
      el("div", { class: "hm-tip-title" }, `"${unit.label}"`),
      el("div", { class: "hm-tip-where" }, where, isEach(result) ? ` · target ${state.row + 1}` : ""),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "value"), el("th", {}, "share of total"))),
        el("tbody", {}, rowsOf)));
    tooltip.hidden = false;
    const box = span.getBoundingClientRect(), host = container.getBoundingClientRect();
    tooltip.style.left = `${Math.max(0, Math.min(box.left - host.left, host.width - tooltip.offsetWidth))}px`;
    tooltip.style.top = `${box.bottom - host.top + 6}px`;
    span.setAttribute("aria-describedby", tooltip.id);
  }

  function hideTip() {
    tooltip.hidden = true;
  }

  function drawShares(index) {
    if (components.length === 1) return;
    const numbers = numbersOf(index).filter((n) => n.component !== "score");
    shares.replaceChildren(
      el("p", { class: "hm-shares-unit" }, `"${current[index].label}" holds this share of each term over the ${VIEWS[state.view]}:`),
      ...numbers.map((n) => el("div", { class: "hm-bar-row", "data-component": n.component },
        el("span", { class: "hm-bar-label" }, COMPONENTS[n.component].label),
        el("span", { class: "hm-bar" }, el("span", { class: "hm-bar-fill", style: `width: ${Math.max(0, Math.min(1, n.share ?? 0)) * 100}%` })),
        el("span", { class: "hm-share" }, formatShare(n.share)))));
  }

  function drawDiagnostics() {
    const diagnostics = result.diagnostics;
    if (result.partial && !(result.meta.plan && result.meta.plan.stopped)) {
      faithfulness.replaceChildren(el("p", { class: "hm-muted hm-trust-pending" }, "Waiting for the final result: the trust line is measured on it."));
      return;
    }
    if (!diagnostics) {
      faithfulness.replaceChildren(el("p", { class: "hm-muted" }, "Not measured (turn on diagnostics to see how the prediction changes when the top tokens are removed)."));
      return;
    }
    const row = diagnostics.rows.find((r) => r.targets.includes(state.row)) || diagnostics.rows[0];
    const what = targetText(result, row.targets);
    const three = row.points[1];
    const verb = three.removed <= row.probability ? "drops" : "raises";
    faithfulness.replaceChildren(
      el("p", { class: "hm-trust" },
        `Removing the ${three.k} top token${three.k === 1 ? "" : "s"} ${verb} p("${what}") from ${formatProbabilities(row.probability, three.removed).join(" to ")}; `,
        `keeping only ${three.k === 1 ? "it" : "them"} gives ${formatProbability(three.kept)}.`),
      el("table", { class: "hm-diag-table" },
        el("thead", {}, el("tr", {}, [
          ["top k", "the k highest-ranked prompt tokens"],
          ["p without", "p of the target with the top k removed"],
          ["p with only", "p of the target with only the top k kept"],
          ["comp. ↑", "comprehensiveness = p − p without: higher is better"],
          ["suff. ↓", "sufficiency = p − p with only: lower is better"],
        ].map(([h, title]) => el("th", { scope: "col" }, el("abbr", { title }, h))))),
        el("tbody", {}, row.points.map((p) => el("tr", { "data-k": p.k, "data-fraction": p.fraction ?? "" },
          el("th", { scope: "row" }, p.fraction ? `${Math.round(p.fraction * 100)} % (${p.k})` : String(p.k)),
          el("td", {}, formatProbability(p.removed)), el("td", {}, formatProbability(p.kept)),
          el("td", {}, formatProbability(p.comprehensiveness)), el("td", {}, formatProbability(p.sufficiency)))))),
      el("p", { class: "hm-muted" }, `Comprehensiveness (comp.) = p − p without the top k; sufficiency (suff.) = p − p with only them. `,
        `A removed token's input embedding is replaced by the "${diagnostics.mask}" mask.`));
  }

  function drawMatrix() {
    if (rows === 1 || options.compact) return;
    const cols = units(result, state.view);
    const all = result.targets.map((_, j) => cols.map((u) => valueOf(u, state.component, j)));
    const max = scaleMax(all.flat());
    matrix.replaceChildren(el("table", { class: "hm-matrix-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "target \\ prompt"), cols.map((u) => el("th", { scope: "col" }, u.label)))),
      el("tbody", {}, all.map((list, j) => el("tr", { class: j === state.row ? "hm-active" : "" },
        el("th", { scope: "row" }, el("button", { type: "button", onclick: () => set({ row: j }) }, `"${result.targets[j].text ?? result.targets[j].id}"`)),
        list.map((v) => {
          const c = colour(v, max, signed);
          return el("td", { style: `background-color: ${c.css}; color: ${c.text}`, "data-value": v === null ? "null" : String(v), title: formatNumber(v) }, formatNumber(v));
        }))))));
  }

  function onKey(event) {
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (step) {
      event.preventDefault();
      const next = Math.max(0, Math.min(current.length - 1, (state.focus ?? -1) + step));
      focusUnit(next, true);
      const span = text.querySelector(`.hm-unit[data-index="${next}"]`);
      if (span) showTip(next, span);
    } else if (event.key === "Enter" && state.focus !== null) {
      select(state.focus);
    } else if (event.key === "Escape") hideTip();
  }

  function select(index) {
    if (options.onSelect && current[index] && current[index].kind === "token") options.onSelect(current[index]);
  }

  function set(changes) {
    const viewChanged = changes.view !== undefined && changes.view !== state.view;
    Object.assign(state, changes);
    if (viewChanged) state.focus = null;
    const row = container.querySelector(`select[name="${id}-row"]`);
    if (row) row.value = String(state.row);
    hideTip();
    drawText();
    drawDiagnostics();
    drawMatrix();
  }

  set({});
  return {
    state, set, signed,
    values: () => values(),
    units: () => current,
    canvas: () => toCanvas(result, current, values(), signed, state, methods),
  };
}

// ------------------------------------------------------------------ PNG

/** The heatmap as a canvas (the page exports it as PNG): title, wrapped coloured units, legend. */
export function toCanvas(result, list, values, signed, state, methods) {
  const width = 960, pad = 16, lineHeight = 30, font = "16px system-ui, sans-serif";
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d");
  ctx.font = font;
  const max = Math.max(0, ...values.filter(Number.isFinite).map(Math.abs));
  const boxes = [];
  let x = pad, y = pad + 40;
  const place = (label, fill, ink, outline) => {
    const w = ctx.measureText(label).width + 10;
    if (x + w > width - pad) {
      x = pad;
      y += lineHeight;
    }
    boxes.push({ label, x, y, w, fill, ink, outline });
    x += w + 4;
  };
  list.forEach((u, i) => {
    const c = colour(values[i], max, signed);
    place(u.label, c.css, c.text, false);
  });
  result.targets.forEach((t) => place(t.text ?? String(t.id), "#ffffff", "#111111", true));
  canvas.width = width;
  canvas.height = y + lineHeight + 70;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = "bold 16px system-ui, sans-serif";
  ctx.fillStyle = "#111111";
  const targets = result.targets.map((t) => t.text ?? t.id).join(" ");
  ctx.fillText(`${result.method} · ${COMPONENTS[state.component].label} · explaining "${targets}" · ${result.meta.model}`, pad, pad + 16);
  ctx.font = font;
  ctx.textBaseline = "middle";
  for (const b of boxes) {
    ctx.fillStyle = b.fill;
    ctx.fillRect(b.x, b.y, b.w, lineHeight - 6);
    if (b.outline) {
      ctx.strokeStyle = "#111111";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(b.x + 0.5, b.y + 0.5, b.w - 1, lineHeight - 7);
      ctx.setLineDash([]);
    }
    ctx.fillStyle = b.ink;
    ctx.fillText(b.label, b.x + 5, b.y + (lineHeight - 6) / 2);
  }
  const top = y + lineHeight + 14, low = signed ? -max : 0;
  for (let i = 0; i < 200; i++) {
    ctx.fillStyle = colour(low + ((max - low) * i) / 199, max, signed).css;
    ctx.fillRect(pad + i * 2, top, 2, 16);
  }
  ctx.fillStyle = "#111111";
  ctx.textBaseline = "alphabetic";
  const middle = formatNumber((low + max) / 2);
  ctx.fillText(formatNumber(low), pad, top + 36);
  ctx.fillText(middle, pad + 200 - ctx.measureText(middle).width / 2, top + 36);
  ctx.fillText(formatNumber(max), pad + 400 - ctx.measureText(formatNumber(max)).width, top + 36);
  return canvas;
}

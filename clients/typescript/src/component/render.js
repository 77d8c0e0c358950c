/* The HETA heatmap: the one renderer of the result document (docs/result.md) behind the
   <heta-attribution> element, which the explorer page, the HTML report and dashboards use. It reads
   only the document's fields — tokens, aggregates, targets, diagnostics, meta, warnings — and loads
   nothing: no network, no dependencies. */
import { toCanvas } from "./canvas.js";
import { available, COMPONENTS, isEach, partialNote, targetText, TOP, units, valueOf, VIEWS } from "./document.js";
import { colour, formatNumber, formatProbabilities, formatProbability, formatShare, ranking } from "./scale.js";

export { toCanvas } from "./canvas.js";
export { checkDocument, COMPONENTS, partialNote, units, valueOf, VIEWS } from "./document.js";
export { colour, formatNumber, formatProbability, formatShare, ranking, spearman, topOverlap } from "./scale.js";

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

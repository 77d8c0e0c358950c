/* A job's result card (the <heta-attribution> heatmap, its exports, a token click that sets the next
   target), the places the cards go, and the agreement of two compared methods. */

import { api, report } from "./explorer-api.js";
import { setInput, setTarget } from "./explorer-form.js";
import { served } from "./explorer-models.js";
import { $, download, showAlert } from "./explorer-page.js";

const { spearman, topOverlap } = window.HetaAttribution;

/** A card for a job's result; ``card.show(outcome)`` draws a partial or the final result in place
 * (the reader's component, view and row choices are kept). */
function resultCard(outcome, title) {
  const card = document.createElement("article");
  card.className = "card result";
  card.dataset.jobId = outcome.jobId;
  card.dataset.method = outcome.result.method;
  const toolbar = document.createElement("div");
  toolbar.className = "toolbar";
  const label = document.createElement("span");
  label.className = "toolbar-label";
  label.textContent = "Export:";
  const button = (text, action) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "small";
    b.textContent = text;
    b.addEventListener("click", () => action().catch(report));
    return b;
  };
  const heatmap = document.createElement("heta-attribution");
  heatmap.setAttribute("selectable", "");
  if (title) heatmap.setAttribute("heading", title);
  heatmap.methods = served.method_details;
  heatmap.addEventListener("heta-select", ({ detail: unit }) => {
    if (unit.item.position < 1) {
      showAlert("The first token has nothing before it to explain it from; pick a later one.", "info");
      return;
    }
    if (outcome.result.text !== null && $("#text").value && !outcome.result.text.startsWith($("#text").value)) setInput("text", outcome.result.text);
    setTarget("position", unit.item.position);
    showAlert(`Target set to the token “${unit.label}” at position ${unit.item.position}. Press Explain to see what made the model predict it.`, "info");
    $("#explain").focus();
  });
  const reportButton = button("HTML report", async () => {
    const response = await api(`/jobs/${outcome.jobId}/report`, { raw: true });
    download(`heta-${outcome.jobId}.html`, await response.blob());
  });
  toolbar.append(label,
    button("JSON", async () => download(`heta-${outcome.jobId}.json`, new Blob([outcome.raw], { type: "application/json" }))),
    reportButton,
    button("PNG", () => new Promise((resolve) => heatmap.canvas().toBlob((blob) => {
      download(`heta-${outcome.jobId}.png`, blob);
      resolve();
    }, "image/png"))));
  card.append(toolbar, heatmap);
  card.show = (next) => {
    outcome = next;
    heatmap.result = next.result; // the same job's next partial (or final) result keeps the reader's choices
    card.dataset.partial = next.result.partial ? (next.result.stages_done || []).join(",") : "";
    reportButton.disabled = Boolean(next.result.partial); // a report is of a finished job
    reportButton.title = next.result.partial ? "available when the job ends" : "";
  };
  card.show(outcome);
  return card;
}

/** The card of ``slot``: drawn at a job's first partial result, refined in place by the next. */
export function showIn(slot, outcome, title) {
  const card = slot.firstElementChild;
  if (card && card.dataset.jobId === outcome.jobId) card.show(outcome);
  else slot.replaceChildren(resultCard(outcome, title));
}

function showAgreement(left, right) {
  const box = $("#agreement");
  const a = left.result.tokens.map((t) => (Array.isArray(t.score) ? t.score[0] : t.score));
  const b = right.result.tokens.map((t) => (Array.isArray(t.score) ? t.score[0] : t.score));
  const rho = spearman(a, b);
  const k = Math.min(3, a.length);
  const overlap = topOverlap(a, b, k);
  box.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = `Do ${left.result.method} and ${right.result.method} agree?`;
  const numbers = document.createElement("p");
  numbers.className = "agreement-numbers";
  const item = (name, value, id) => {
    const span = document.createElement("span");
    span.append(`${name} `);
    const strong = document.createElement("strong");
    strong.id = id;
    strong.textContent = value;
    span.append(strong);
    return span;
  };
  numbers.append(
    item("Spearman ρ of the token scores", rho === null ? "–" : rho.toFixed(3), "spearman"),
    item(`top-${k} overlap`, `${Math.round(overlap * k)} / ${k}`, "top-overlap"));
  const note = document.createElement("p");
  note.className = "hint";
  note.textContent = "Rank agreement over the prompt tokens (first target row in each mode); each side's trust panel shows how much its own top tokens carry the prediction.";
  box.append(h, numbers, note);
  box.hidden = false;
}

export function clearResults() {
  $("#results").replaceChildren();
  $("#results").classList.remove("compare");
  $("#agreement").hidden = true;
  $("#runs").replaceChildren();
  $("#welcome").hidden = true;
}

/** ``count`` empty places in #results, one per job, in order. */
export function resultSlots(count) {
  const results = $("#results");
  results.classList.toggle("compare", count > 1);
  const slots = Array.from({ length: count }, () => {
    const slot = document.createElement("div");
    slot.className = "result-slot";
    return slot;
  });
  results.replaceChildren(...slots);
  return slots;
}

export function showResults(outcomes, slots = resultSlots(outcomes.length)) {
  outcomes.forEach((o, i) => showIn(slots[i], o, outcomes.length > 1 ? o.result.method : null));
  if (outcomes.length > 1) showAgreement(outcomes[0], outcomes[1]);
}

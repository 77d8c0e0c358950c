/* The result document (docs/result.md) as the heatmap reads it: its components, views and units,
   what a partial result holds, and the check that a document can be drawn at all. */

export const COMPONENTS = {
  score: { label: "score", help: "the attribution" },
  flow: { label: "M_T (flow)", help: "share of the attention–value flow into the target (sums to 1)" },
  hessian: { label: "S (curvature)", help: "Hessian sensitivity of log p(target) to the token" },
  kl: { label: "I (KL impact)", help: "KL divergence in nats when the token is masked" },
};
export const VIEWS = { token: "tokens", word: "words", sentence: "sentences", span: "spans", message: "messages" };
export const TOP = 10;

// ------------------------------------------------------------------ the document

export function isEach(result) {
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

export function available(result) {
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
export function targetText(result, indices) {
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

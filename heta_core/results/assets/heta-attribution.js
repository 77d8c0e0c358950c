/* heta-attribution.js: <heta-attribution> and the HETA client, built by clients/typescript (npm run build). Do not edit. */
"use strict";
(() => {
  var __defProp = Object.defineProperty;
  var __export = (target, all) => {
    for (var name in all)
      __defProp(target, name, { get: all[name], enumerable: true });
  };

  // src/component/index.ts
  var index_exports = {};
  __export(index_exports, {
    COMPONENTS: () => COMPONENTS,
    HetaAttribution: () => HetaAttribution,
    checkDocument: () => checkDocument,
    colour: () => colour,
    define: () => define,
    formatNumber: () => formatNumber,
    formatProbability: () => formatProbability,
    formatShare: () => formatShare,
    ranking: () => ranking,
    render: () => render,
    spearman: () => spearman,
    topOverlap: () => topOverlap
  });

  // src/errors.ts
  var ProblemError = class extends Error {
    status;
    code;
    detail;
    /** the whole problem document (`errors`, `field`, `instance`, ... when the service sent them) */
    problem;
    /** seconds the service asked to wait (`Retry-After`), when it said */
    retryAfter;
    constructor(status, problem, retryAfter = null) {
      const code = typeof problem.code === "string" ? problem.code : "http_error";
      const detail = typeof problem.detail === "string" ? problem.detail : "";
      super(`${status} ${code}: ${detail}`);
      this.name = "ProblemError";
      this.status = status;
      this.code = code;
      this.detail = detail;
      this.problem = problem;
      this.retryAfter = retryAfter;
    }
  };
  var JobFailedError = class extends ProblemError {
    constructor(status, problem) {
      super(status, problem);
      this.name = "JobFailedError";
    }
  };
  var HttpError = class extends Error {
    status;
    body;
    contentType;
    constructor(status, body, contentType) {
      super(`HTTP ${status}${contentType ? ` (${contentType})` : ""}: ${body.slice(0, 200)}`);
      this.name = "HttpError";
      this.status = status;
      this.body = body;
      this.contentType = contentType;
    }
  };
  var NetworkError = class extends Error {
    constructor(message, options) {
      super(message, options);
      this.name = "NetworkError";
    }
  };
  function retryAfterSeconds(value) {
    if (value === null || value.trim() === "") return null;
    const seconds = Number(value);
    if (Number.isFinite(seconds)) return Math.max(0, seconds);
    const date = Date.parse(value);
    return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1e3);
  }
  async function errorOf(response) {
    const body = await response.text();
    const type = response.headers.get("Content-Type");
    if (type && /json/i.test(type)) {
      try {
        const parsed = JSON.parse(body);
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed) && typeof parsed.code === "string") {
          return new ProblemError(response.status, parsed, retryAfterSeconds(response.headers.get("Retry-After")));
        }
      } catch {
      }
    }
    return new HttpError(response.status, body, type);
  }

  // src/sse.ts
  async function* parseEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (; ; ) {
        const { value, done } = await reader.read();
        buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
        buffer = buffer.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const parsed = parseBlock(block);
          if (parsed) yield parsed;
        }
        if (done) return;
      }
    } finally {
      reader.releaseLock();
    }
  }
  function parseBlock(block) {
    let event = "message";
    let id;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = text;
      else if (field === "data") data.push(text);
      else if (field === "id") id = text;
    }
    return data.length ? { event, data: data.join("\n"), id } : null;
  }

  // src/client.ts
  var RETRY_STATUSES = /* @__PURE__ */ new Set([429, 503]);
  var FINAL = /* @__PURE__ */ new Set(["done", "failed", "cancelled", "dead_lettered"]);
  var HetaClient = class {
    baseUrl;
    #headers;
    #retries;
    #backoffMs;
    #maxBackoffMs;
    #fetch;
    constructor(options = {}) {
      this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
      this.#headers = options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {};
      this.#retries = options.retries ?? 4;
      this.#backoffMs = options.backoffMs ?? 500;
      this.#maxBackoffMs = options.maxBackoffMs ?? 3e4;
      this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    }
    /** POST /jobs: queue an attribution; its job id (202). */
    submit(body, options = {}) {
      return this.#json("POST", "/jobs", { body, ok: [202], idempotencyKey: newKey(options), signal: options.signal });
    }
    /** POST /attribute, then (if the job outlived the request's `wait`) its events to the end: the result. */
    async attribute(body, options = {}) {
      const answer = await this.#json("POST", "/attribute", {
        body,
        ok: [200, 202],
        idempotencyKey: newKey(options),
        signal: options.signal
      });
      if ("tokens" in answer && !answer.partial) return answer;
      return await this.wait(answer.job_id, options);
    }
    /** POST /attribute/batch: many prompts as one job; every item's result or error. */
    async batch(body, options = {}) {
      const answer = await this.#json("POST", "/attribute/batch", {
        body,
        ok: [200, 202],
        idempotencyKey: newKey(options),
        signal: options.signal
      });
      if ("items" in answer) return answer;
      return await this.wait(answer.job_id, options);
    }
    /** GET /jobs/{id}: status, progress, and the result when done. */
    job(jobId, options = {}) {
      return this.#json("GET", `/jobs/${encodeURIComponent(jobId)}`, options);
    }
    /** DELETE /jobs/{id}: ask the job to stop; the job as it is then. */
    cancel(jobId, options = {}) {
      return this.#json("DELETE", `/jobs/${encodeURIComponent(jobId)}`, { ...options, ok: [200, 202] });
    }
    /** GET /models: the served models, the default one and the methods. */
    models(options = {}) {
      return this.#json("GET", "/models", options);
    }
    /** GET /jobs/{id}/events: the job's events (status, progress, partial, then result or problem), read
     * with fetch so the key travels in a header. */
    async *events(jobId, options = {}) {
      const response = await this.#send("GET", `/jobs/${encodeURIComponent(jobId)}/events`, { signal: options.signal, accept: "text/event-stream" });
      if (!response.body) throw new NetworkError("the event stream has no body");
      for await (const raw of parseEvents(response.body)) {
        yield { event: raw.event, data: JSON.parse(raw.data) };
      }
    }
    /** The job's result, following its events (reconnecting when a server drains); a job that ends
     * without one rejects with JobFailedError (its `code`: cancelled, deadline_exceeded, ...). */
    async wait(jobId, options = {}) {
      for (let attempt = 0; ; attempt++) {
        let problem = null;
        for await (const item of this.events(jobId, options)) {
          if (item.event === "result") return item.data;
          if (item.event === "partial") options.onPartial?.(item.data);
          else if (item.event === "progress") options.onProgress?.(item.data.progress);
          else if (item.event === "status") options.onProgress?.(item.data.progress);
          else if (item.event === "problem") problem = item.data;
        }
        const draining = problem?.code === "draining";
        if (problem && !draining) throw new JobFailedError(problem.status, problem);
        if (attempt >= this.#retries) {
          throw problem ? new ProblemError(problem.status, problem) : new NetworkError(`the event stream of job ${jobId} ended before the job did`);
        }
        const view = await this.job(jobId, options);
        if (FINAL.has(view.status)) {
          if (view.status === "done" && view.result) return view.result;
          throw new JobFailedError(409, { code: view.error?.code ?? view.status, detail: view.error?.detail ?? `the job is ${view.status}` });
        }
        await sleep(this.#delay(attempt, null), options.signal);
      }
    }
    async #json(method, path, options = {}) {
      const response = await this.#send(method, path, options);
      return await response.json();
    }
    /** One call with retries (429, 503, no answer); the response, or a typed error. */
    async #send(method, path, options = {}) {
      const headers = { ...this.#headers, Accept: options.accept ?? "application/json" };
      if (options.body !== void 0) headers["Content-Type"] = "application/json";
      if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
      const body = options.body === void 0 ? void 0 : JSON.stringify(options.body);
      const ok = options.ok ?? [200];
      for (let attempt = 0; ; attempt++) {
        const last = attempt >= this.#retries;
        let response;
        try {
          response = await this.#fetch(this.baseUrl + path, { method, headers, body, signal: options.signal });
        } catch (error2) {
          if (options.signal?.aborted) throw error2;
          if (last) throw new NetworkError(`${method} ${path}: the server did not answer`, { cause: error2 });
          await sleep(this.#delay(attempt, null), options.signal);
          continue;
        }
        if (ok.includes(response.status)) return response;
        const error = await errorOf(response);
        if (!RETRY_STATUSES.has(response.status) || last) throw error;
        await sleep(this.#delay(attempt, error), options.signal);
      }
    }
    #delay(attempt, error) {
      const after = error instanceof ProblemError ? error.retryAfter : null;
      if (after !== null) return Math.min(after * 1e3, this.#maxBackoffMs);
      return Math.min(this.#backoffMs * 2 ** attempt, this.#maxBackoffMs) * (0.5 + Math.random() / 2);
    }
  };
  function newKey(options) {
    return options.idempotencyKey ?? globalThis.crypto.randomUUID();
  }
  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(signal.reason);
      }, { once: true });
    });
  }

  // src/component/document.js
  var COMPONENTS = {
    score: { label: "score", help: "the attribution" },
    flow: { label: "M_T (flow)", help: "share of the attention–value flow into the target (sums to 1)" },
    hessian: { label: "S (curvature)", help: "Hessian sensitivity of log p(target) to the token" },
    kl: { label: "I (KL impact)", help: "KL divergence in nats when the token is masked" }
  };
  var VIEWS = { token: "tokens", word: "words", sentence: "sentences", span: "spans", message: "messages" };
  var TOP = 10;
  function isEach(result) {
    return result.target_mode === "each";
  }
  function units(result, view) {
    if (view === "token") {
      return result.tokens.map((t) => ({ kind: "token", label: t.text ?? String(t.id), start: t.start, end: t.end, positions: [t.position], item: t }));
    }
    return (result.aggregates[view] || []).map((s) => ({
      kind: view,
      label: s.text ?? (s.role ? `${s.role} message ${s.index}` : `#${s.index}`),
      start: s.start,
      end: s.end,
      positions: s.tokens,
      item: s
    }));
  }
  function valueOf(unit, component, row) {
    const value = unit.item[component];
    return Array.isArray(value) ? value[row] ?? null : value ?? null;
  }
  function available(result) {
    const components = ["score"];
    for (const c of ["flow", "hessian", "kl"]) if (result.tokens.some((t) => t[c] !== null && t[c] !== void 0)) components.push(c);
    const views = ["token", ...Object.keys(VIEWS).filter((v) => v !== "token" && (result.aggregates[v] || []).length)];
    return { components, views };
  }
  var STAGE_NAMES = { flow: "flow", kl: "KL impact", hessian: "curvature", diagnostics: "diagnostics" };
  function partialNote(result) {
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
  function targetText(result, indices) {
    const first = result.targets[indices[0]], last = result.targets[indices[indices.length - 1]];
    if (result.text !== null && first.start !== null && last.end !== null) return result.text.slice(first.start, last.end);
    return indices.map((i) => result.targets[i].text ?? String(result.targets[i].id)).join(" ");
  }
  var isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
  function checkDocument(input) {
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
    if (doc.aggregates !== void 0 && !isObject(doc.aggregates)) wrong.push("“aggregates” (an object)");
    if (doc.warnings !== void 0 && !(Array.isArray(doc.warnings) && doc.warnings.every(isObject))) wrong.push("“warnings” (a list of warnings)");
    if (wrong.length) throw new Error(`this is not a HETA result document: it lacks ${wrong.join(", ")}`);
    return {
      ...doc,
      text: doc.text ?? null,
      aggregates: doc.aggregates ?? {},
      warnings: doc.warnings ?? [],
      target_mode: doc.target_mode ?? "sum",
      diagnostics: doc.diagnostics ?? null
    };
  }

  // src/component/scale.js
  function oklch(L, C, h) {
    const a = C * Math.cos(h * Math.PI / 180), b = C * Math.sin(h * Math.PI / 180);
    const l = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3;
    const m = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3;
    const s = (L - 0.0894841775 * a - 1.291485548 * b) ** 3;
    const linear = [
      4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
      -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
      -0.0041960863 * l - 0.7034186147 * m + 1.707614701 * s
    ].map((c) => Math.min(1, Math.max(0, c)));
    const rgb = linear.map((c) => Math.round(255 * (c <= 31308e-7 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055)));
    const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
    return { css: `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`, text: luminance < 0.18 ? "#ffffff" : "#000000" };
  }
  function colour(value, max, signed) {
    if (value === null || value === void 0 || !Number.isFinite(value) || !(max > 0)) return oklch(0.98, 0, 0);
    const t = Math.max(-1, Math.min(1, value / max));
    const strength = signed ? Math.abs(t) : Math.max(0, t);
    const hue = signed ? t < 0 ? 255 : 35 : 265;
    return oklch(0.98 - 0.56 * strength, 0.125 * strength, hue);
  }
  var SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };
  function formatNumber(value) {
    if (value === null || value === void 0 || Number.isNaN(value)) return "–";
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
  function formatProbability(p) {
    if (p === null || p === void 0) return "–";
    return Math.abs(p) >= 1e-3 ? p.toPrecision(3) : formatNumber(p);
  }
  function formatProbabilities(a, b) {
    for (let digits = 3; digits <= 8; digits++) {
      if (a === null || b === null || a === b || Math.abs(a) < 1e-3 || Math.abs(b) < 1e-3) break;
      if (a.toPrecision(digits) !== b.toPrecision(digits)) return [a.toPrecision(digits), b.toPrecision(digits)];
    }
    return [formatProbability(a), formatProbability(b)];
  }
  function formatShare(share) {
    if (share === null || !Number.isFinite(share)) return "";
    const percent = 100 * share;
    if (percent !== 0 && Math.abs(percent) < 0.1) return percent > 0 ? "<0.1 %" : ">−0.1 %";
    return `${percent.toFixed(1).replace("-", "−")} %`;
  }
  function ranking(values) {
    return values.map((v, i) => [v === null || !Number.isFinite(v) ? -Infinity : v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, i]) => i);
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
  function spearman(a, b) {
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
  function topOverlap(a, b, k) {
    const size = Math.min(k, a.length);
    const top = new Set(ranking(a).slice(0, size));
    return ranking(b).slice(0, size).filter((i) => top.has(i)).length / size;
  }

  // src/component/canvas.js
  function toCanvas(result, list, values, signed, state, methods) {
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
      ctx.fillStyle = colour(low + (max - low) * i / 199, max, signed).css;
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

  // src/component/render.js
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === void 0 || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.style.cssText = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === void 0 || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  var instances = 0;
  function render(container, result, options = {}) {
    const id = `hm${++instances}`;
    const methods = options.methods || {};
    const signed = Boolean((methods[result.method] || {}).signed);
    const { components, views } = available(result);
    const start = options.state || {};
    const state = {
      component: components.includes(start.component) ? start.component : "score",
      view: views.includes(start.view) ? start.view : "token",
      row: Number.isInteger(start.row) && start.row < result.targets.length ? start.row : 0,
      focus: null
    };
    const note = partialNote(result);
    const rows = isEach(result) ? result.targets.length : 1;
    container.replaceChildren();
    container.classList.add("heta-heatmap");
    const tooltip = el("div", { class: "hm-tooltip", role: "tooltip", id: `${id}-tip`, hidden: true });
    const targetsLabel = targetText(result, result.targets.map((_, j) => j));
    const logprob = result.targets.reduce((sum, t) => sum + (t.logprob ?? NaN), 0);
    const header = el(
      "div",
      { class: "hm-header" },
      options.title ? el("h3", {}, options.title) : null,
      el(
        "p",
        { class: "hm-what" },
        el("strong", {}, result.method),
        " explains ",
        el("q", { class: "hm-target" }, targetsLabel),
        ` (${isEach(result) ? "each target token separately" : result.targets.length > 1 ? "the span as a whole" : "the next token"}; `,
        `p = ${formatProbability(Math.exp(logprob))}) · ${result.meta.model}`
      ),
      el(
        "p",
        { class: "hm-summary" },
        (methods[result.method] || {}).summary || "",
        signed ? " — signed: blue works against the target, red for it" : ""
      ),
      ...result.warnings.map((w) => el("p", { class: "hm-warning", role: "note" }, `⚠ ${w.message}`)),
      note ? el("p", { class: "hm-partial", role: "status", "data-stages": (result.stages_done || []).join(",") }, note) : null
    );
    const controls = el("div", { class: "hm-controls" });
    if (components.length > 1) {
      controls.append(el(
        "fieldset",
        { class: "hm-components" },
        el("legend", {}, "Show"),
        components.map((c) => el(
          "label",
          { title: COMPONENTS[c].help },
          el("input", {
            type: "radio",
            name: `${id}-component`,
            value: c,
            checked: c === state.component,
            onchange: () => set({ component: c })
          }),
          ` ${COMPONENTS[c].label}`
        ))
      ));
    }
    if (views.length > 1) {
      controls.append(el(
        "label",
        { class: "hm-view" },
        "View ",
        el(
          "select",
          { name: `${id}-view`, onchange: (e) => set({ view: e.target.value }) },
          views.map((v) => el("option", { value: v, selected: v === state.view }, VIEWS[v]))
        )
      ));
    }
    if (rows > 1) {
      controls.append(el(
        "label",
        { class: "hm-row" },
        "Target ",
        el(
          "select",
          { name: `${id}-row`, onchange: (e) => set({ row: Number(e.target.value) }) },
          result.targets.map((t, j) => el("option", { value: j }, `${j + 1}: "${t.text ?? t.id}"`))
        )
      ));
    }
    const legend = el("div", { class: "hm-legend", "aria-label": "colour scale" });
    const text = el("div", {
      class: "hm-text",
      tabindex: 0,
      role: "group",
      "aria-describedby": `${id}-help`,
      onkeydown: onKey,
      onmouseleave: () => hideTip()
    });
    const help = el("p", { class: "hm-help", id: `${id}-help` }, "Hover or use ←/→ on the text to read every number of a unit.");
    const topList = el("ol", { class: "hm-top" });
    const shares = el("div", { class: "hm-shares" });
    const faithfulness = el("div", { class: "hm-diagnostics" });
    const matrix = el("div", { class: "hm-matrix" });
    const side = el(
      "div",
      { class: "hm-side" },
      el("section", {}, el("h4", {}, "Top units"), topList),
      components.length > 1 ? el("section", {}, el("h4", {}, "Components of the focused unit"), shares) : null
    );
    const main = el(
      "div",
      { class: "hm-main" },
      text,
      help,
      el("section", { class: "hm-trust-section" }, el("h4", {}, "Trust: how faithful is this attribution?"), faithfulness)
    );
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
      const stops = Array.from({ length: 11 }, (_, i) => colour(low + (max - low) * i / 10, max, signed).css);
      legend.replaceChildren(
        el("span", { class: "hm-legend-label" }, `${COMPONENTS[state.component].label}${signed ? " (diverging)" : ""}`),
        el(
          "span",
          { class: "hm-legend-scale" },
          el("span", { class: "hm-legend-bar", style: `background: linear-gradient(to right, ${stops.join(", ")})` }),
          el(
            "span",
            { class: "hm-legend-ticks" },
            [low, (low + max) / 2, max].map((v) => el("span", { class: "hm-tick" }, formatNumber(v)))
          )
        ),
        el("span", { class: "hm-muted" }, signed ? "red supports the target, blue works against it" : "darker = mattered more")
      );
    }
    function unitSpan(unit, value, max, sum, index) {
      const c = colour(value, max, signed);
      const share = sum > 0 && Number.isFinite(value) ? value / sum : null;
      return el("span", {
        class: "hm-unit",
        tabindex: -1,
        "data-index": index,
        "data-position": unit.positions.join(" "),
        "data-value": value === null ? "null" : String(value),
        "data-share": share === null ? "" : String(share),
        style: `background-color: ${c.css}; color: ${c.text}`,
        "aria-label": `${unit.label}: ${formatNumber(value)} ${formatShare(share)}`,
        onmouseenter: () => focusUnit(index, false),
        onclick: () => select(index),
        onfocus: () => focusUnit(index, false)
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
        nodes.push(el("span", {
          class: `hm-target-token${active ? " hm-active" : ""}`,
          title: `explained token ${j + 1}: log p = ${formatNumber(t.logprob)}`
        }, t.text ?? String(t.id)));
      });
      text.replaceChildren(...nodes);
      const first = text.querySelector(".hm-unit");
      if (first) first.tabIndex = 0;
      drawTop(list, sum);
      focusUnit(state.focus ?? ranking(list)[0] ?? 0, false, true);
    }
    function drawTop(list, sum) {
      const top = ranking(list).slice(0, Math.min(TOP, list.length));
      topList.replaceChildren(...top.map((i) => el(
        "li",
        { "data-index": i },
        el("span", { class: "hm-top-label" }, current[i].label),
        " ",
        el("span", { class: "hm-number" }, formatNumber(list[i])),
        " ",
        el("span", { class: "hm-share" }, sum > 0 ? `(${formatShare(list[i] / sum)})` : "")
      )));
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
      spans.forEach((s) => s.tabIndex = Number(s.dataset.index) === index ? 0 : -1);
      const span = text.querySelector(`.hm-unit[data-index="${index}"]`);
      if (move && span) span.focus();
      drawShares(index);
      if (!quiet && span) showTip(index, span);
    }
    function showTip(index, span) {
      const unit = current[index];
      const item = unit.item;
      const rowsOf = numbersOf(index).map((n) => el(
        "tr",
        { "data-component": n.component },
        el("th", { scope: "row" }, COMPONENTS[n.component].label),
        el("td", { class: "hm-number" }, formatNumber(n.value)),
        el("td", { class: "hm-share" }, formatShare(n.share))
      ));
      const where = unit.kind === "token" ? `position ${item.position} · id ${item.id}${item.role ? ` · ${item.role} (message ${item.message})` : ""}${item.template ? " · template" : ""}${item.special ? " · special" : ""}` : `${unit.kind} ${item.index} · ${item.tokens.length} token${item.tokens.length === 1 ? "" : "s"}${item.role ? ` · ${item.role}` : ""}`;
      tooltip.replaceChildren(
        el("div", { class: "hm-tip-title" }, `"${unit.label}"`),
        el("div", { class: "hm-tip-where" }, where, isEach(result) ? ` · target ${state.row + 1}` : ""),
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "value"), el("th", {}, "share of total"))),
          el("tbody", {}, rowsOf)
        )
      );
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
        ...numbers.map((n) => el(
          "div",
          { class: "hm-bar-row", "data-component": n.component },
          el("span", { class: "hm-bar-label" }, COMPONENTS[n.component].label),
          el("span", { class: "hm-bar" }, el("span", { class: "hm-bar-fill", style: `width: ${Math.max(0, Math.min(1, n.share ?? 0)) * 100}%` })),
          el("span", { class: "hm-share" }, formatShare(n.share))
        ))
      );
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
        el(
          "p",
          { class: "hm-trust" },
          `Removing the ${three.k} top token${three.k === 1 ? "" : "s"} ${verb} p("${what}") from ${formatProbabilities(row.probability, three.removed).join(" to ")}; `,
          `keeping only ${three.k === 1 ? "it" : "them"} gives ${formatProbability(three.kept)}.`
        ),
        el(
          "table",
          { class: "hm-diag-table" },
          el("thead", {}, el("tr", {}, [
            ["top k", "the k highest-ranked prompt tokens"],
            ["p without", "p of the target with the top k removed"],
            ["p with only", "p of the target with only the top k kept"],
            ["comp. ↑", "comprehensiveness = p − p without: higher is better"],
            ["suff. ↓", "sufficiency = p − p with only: lower is better"]
          ].map(([h, title]) => el("th", { scope: "col" }, el("abbr", { title }, h))))),
          el("tbody", {}, row.points.map((p) => el(
            "tr",
            { "data-k": p.k, "data-fraction": p.fraction ?? "" },
            el("th", { scope: "row" }, p.fraction ? `${Math.round(p.fraction * 100)} % (${p.k})` : String(p.k)),
            el("td", {}, formatProbability(p.removed)),
            el("td", {}, formatProbability(p.kept)),
            el("td", {}, formatProbability(p.comprehensiveness)),
            el("td", {}, formatProbability(p.sufficiency))
          )))
        ),
        el(
          "p",
          { class: "hm-muted" },
          `Comprehensiveness (comp.) = p − p without the top k; sufficiency (suff.) = p − p with only them. `,
          `A removed token's input embedding is replaced by the "${diagnostics.mask}" mask.`
        )
      );
    }
    function drawMatrix() {
      if (rows === 1 || options.compact) return;
      const cols = units(result, state.view);
      const all = result.targets.map((_, j) => cols.map((u) => valueOf(u, state.component, j)));
      const max = scaleMax(all.flat());
      matrix.replaceChildren(el(
        "table",
        { class: "hm-matrix-table" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "target \\ prompt"), cols.map((u) => el("th", { scope: "col" }, u.label)))),
        el("tbody", {}, all.map((list, j) => el(
          "tr",
          { class: j === state.row ? "hm-active" : "" },
          el("th", { scope: "row" }, el("button", { type: "button", onclick: () => set({ row: j }) }, `"${result.targets[j].text ?? result.targets[j].id}"`)),
          list.map((v) => {
            const c = colour(v, max, signed);
            return el("td", { style: `background-color: ${c.css}; color: ${c.text}`, "data-value": v === null ? "null" : String(v), title: formatNumber(v) }, formatNumber(v));
          })
        )))
      ));
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
      const viewChanged = changes.view !== void 0 && changes.view !== state.view;
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
      state,
      set,
      signed,
      values: () => values(),
      units: () => current,
      canvas: () => toCanvas(result, current, values(), signed, state, methods)
    };
  }

  // src/component/styles.css
  var styles_default = `/* <heta-attribution>'s styles, inside its shadow root: the host page's CSS cannot reach them, so the
   element draws the same pixels in the explorer, the HTML report and any dashboard. Theme it with
   the --heta-* custom properties (docs/dashboards.md); the heatmap colours themselves are fixed, so
   every unit keeps its WCAG AA text contrast. */
:host {
  display: block;
  --_font: var(--heta-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  --_mono: var(--heta-mono-font, ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace);
  --_ink: var(--heta-text-color, #111);
  --_muted: var(--heta-muted-color, #4a4a4a);
  --_paper: var(--heta-text-background, #fff);
  --_line: var(--heta-border-color, #c8c8c8);
  --_focus: var(--heta-focus-color, #1a56db);
  --_accent: var(--heta-accent-color, #3b4f9a);
}
/* the inherited text properties set here, not on :host (where the host page's rules would win): the
   page's own text styles stop at the element, and only the --heta-* properties come through */
.hm-frame {
  font: var(--heta-font-size, 15px) / 1.5 var(--_font);
  color: var(--_ink);
  background: var(--heta-background, transparent);
  text-align: start;
  letter-spacing: normal;
  word-spacing: normal;
  text-transform: none;
  text-indent: 0;
  white-space: normal;
  font-style: normal;
  font-weight: normal;
}
:host([hidden]) { display: none; }
* { box-sizing: border-box; }
.heta-heatmap { position: relative; }
.heta-heatmap h3 { margin: 0 0 0.25rem; font-size: 1.1rem; }
.heta-heatmap h4 { margin: 0.75rem 0 0.35rem; font-size: 0.95rem; }
.hm-what, .hm-summary { margin: 0.15rem 0; }
.hm-summary, .hm-muted, .hm-help { color: var(--_muted); font-size: 0.875rem; }
.hm-warning { margin: 0.3rem 0; padding: 0.3rem 0.5rem; background: #fff4d6; color: #111; border-left: 4px solid #b7791f; }
.hm-partial { margin: 0.3rem 0; padding: 0.3rem 0.5rem; background: #e8f0fe; border-left: 4px solid #1a56c4; color: #102a5c; }
.hm-error { margin: 0; padding: 0.6rem 0.8rem; background: #fdecec; border-left: 5px solid #b42318; color: #5c1510; }
.hm-loading { margin: 0; padding: 0.6rem 0.8rem; color: var(--_muted); }
.hm-target { font-weight: 600; }
.hm-controls { display: flex; flex-wrap: wrap; gap: 0.5rem 1.25rem; align-items: center; margin: 0.6rem 0; }
.hm-controls fieldset { border: 0; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 0.25rem 0.75rem; align-items: center; }
.hm-controls legend { float: left; margin-right: 0.5rem; padding: 0; font-weight: 600; }
.hm-controls label { white-space: nowrap; }
select, button { font: inherit; color: #111; }
select { padding: 0.15rem 0.3rem; border: 1px solid #9aa1ae; border-radius: 4px; background: #fff; max-width: 100%; }
:focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }
.hm-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 0.25rem 0.75rem; margin: 0.4rem 0; font-size: 0.85rem; }
.hm-legend-scale { display: inline-flex; flex-direction: column; width: 240px; max-width: 60vw; }
.hm-legend-bar { display: block; height: 14px; border: 1px solid #888; }
.hm-legend-ticks { display: flex; justify-content: space-between; font-variant-numeric: tabular-nums; }
.hm-legend-label { font-weight: 600; }
.hm-body { display: grid; grid-template-columns: minmax(0, 2fr) minmax(220px, 1fr); gap: 1rem; }
/* one column when the element itself is narrow (a dashboard panel, one side of a comparison) */
.heta-heatmap { container-type: inline-size; }
@container (max-width: 640px) { .hm-body { grid-template-columns: minmax(0, 1fr); } }
.hm-text {
  white-space: pre-wrap; word-break: break-word; font: 17px/2.1 var(--_mono);
  padding: 0.6rem; border: 1px solid var(--_line); border-radius: 6px; background: var(--_paper); color: #111;
}
.hm-unit { padding: 0.15em 0.1em; border-radius: 3px; cursor: default; }
.hm-unit:focus-visible, .hm-unit:hover { outline: 2px solid #111; outline-offset: 1px; }
.hm-target-token { padding: 0.1em 0.15em; border: 2px dashed #555; border-radius: 3px; }
.hm-target-token.hm-active { border-color: #111; font-weight: 700; }
.hm-top { margin: 0; padding-left: 1.6rem; }
.hm-top li { margin: 0.1rem 0; }
.hm-top-label { font-family: var(--_mono); }
.hm-number { font-variant-numeric: tabular-nums; }
.hm-share { color: var(--_muted); font-size: 0.85em; }
.hm-bar-row { display: grid; grid-template-columns: 7.5rem 1fr 4.5rem; gap: 0.4rem; align-items: center; margin: 0.2rem 0; font-size: 0.875rem; }
.hm-bar { height: 12px; background: #eceff4; border-radius: 2px; overflow: hidden; }
.hm-bar-fill { display: block; height: 100%; background: var(--_accent); }
.hm-shares-unit { margin: 0 0 0.3rem; font-size: 0.875rem; }
.hm-trust { margin: 0 0 0.4rem; padding: 0.4rem 0.6rem; background: #eef6ee; color: #111; border-left: 4px solid #2f7d32; }
.hm-diag-table, .hm-tooltip table, .hm-matrix-table { border-collapse: collapse; font-size: 0.85rem; }
.hm-diag-table th, .hm-diag-table td { padding: 0.15rem 0.3rem; text-align: right; border-bottom: 1px solid #e2e2e2; }
.hm-diag-table td { white-space: nowrap; font-variant-numeric: tabular-nums; }
.hm-diag-table th[scope="col"] { vertical-align: bottom; font-weight: 600; }
.hm-trust-section { overflow-x: auto; container-type: inline-size; }
.hm-matrix { overflow-x: auto; }
.hm-matrix-table th, .hm-matrix-table td { padding: 0.2rem 0.35rem; border: 1px solid #e2e2e2; text-align: center; white-space: nowrap; }
.hm-matrix-table tr.hm-active th { outline: 2px solid var(--_ink); }
.hm-matrix-table button { font: inherit; color: inherit; background: none; border: 0; cursor: pointer; text-decoration: underline; }
.hm-tooltip {
  position: absolute; z-index: 20; min-width: 240px; max-width: 400px; padding: 0.5rem 0.6rem; background: #fff; color: #111;
  border: 1px solid #777; border-radius: 6px; box-shadow: 0 4px 14px rgba(0, 0, 0, 0.18); font-size: 0.85rem; pointer-events: none;
}
.hm-tooltip[hidden] { display: none; }
.hm-tip-title { font-weight: 700; font-family: var(--_mono); }
.hm-tip-where { color: #4a4a4a; margin-bottom: 0.25rem; }
.hm-tooltip th, .hm-tooltip td { padding: 0.05rem 0.4rem; text-align: right; white-space: nowrap; }
.hm-tooltip th[scope="row"] { text-align: left; font-weight: 600; white-space: nowrap; }
/* five number columns must fit a half-width comparison column and a phone without scrolling */
@container (max-width: 420px) { .hm-diag-table { font-size: 0.72rem; } }
`;

  // src/component/element.ts
  var STATE_ATTRIBUTES = ["component", "view", "row"];
  var SOURCE_ATTRIBUTES = ["src", "job", "base-url", "api-key"];
  var LOOK_ATTRIBUTES = ["heading", "selectable", "compact", "methods"];
  var HetaAttribution = class extends HTMLElement {
    static observedAttributes = [...STATE_ATTRIBUTES, ...SOURCE_ATTRIBUTES, ...LOOK_ATTRIBUTES];
    #frame;
    #result = void 0;
    #explicit = false;
    #methods = null;
    #apiKey = null;
    #heatmap = null;
    #following = null;
    #error = null;
    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const style = document.createElement("style");
      style.textContent = styles_default;
      this.#frame = document.createElement("div");
      this.#frame.className = "hm-frame";
      this.#frame.part.add("frame");
      root.append(style, this.#frame);
    }
    /** The result document drawn (set it to draw another; a partial result of the same job keeps the reader's choices). */
    get result() {
      return this.#result;
    }
    set result(document2) {
      this.#result = document2;
      this.#explicit = true;
      this.#stopFollowing();
      this.#draw();
    }
    /** Each method's `{signed, summary}` (GET /models' `method_details`); signed methods get a diverging scale. */
    get methods() {
      return this.#methods ?? this.#methodsAttribute();
    }
    set methods(value) {
      this.#methods = value;
      this.#draw();
    }
    /** The API key used in `job` mode (kept out of the DOM, unlike the `api-key` attribute). */
    set apiKey(value) {
      this.#apiKey = value;
      if (this.isConnected && this.getAttribute("job")) this.#load();
    }
    /** The reader's current choices: {component, view, row, focus}. */
    get state() {
      return this.#heatmap?.state ?? null;
    }
    /** The message shown instead of a heatmap, or null. */
    get error() {
      return this.#error;
    }
    /** The drawn units and their values (numbers as in the document). */
    units() {
      return this.#heatmap?.units() ?? [];
    }
    values() {
      return this.#heatmap?.values() ?? [];
    }
    /** The heatmap as a canvas (for a PNG export). */
    canvas() {
      return this.#heatmap?.canvas() ?? null;
    }
    connectedCallback() {
      this.#load();
    }
    disconnectedCallback() {
      this.#stopFollowing();
    }
    attributeChangedCallback(name, old, value) {
      if (!this.isConnected || old === value) return;
      if (SOURCE_ATTRIBUTES.includes(name)) this.#load();
      else if (STATE_ATTRIBUTES.includes(name)) this.#safely(() => this.#heatmap?.set(this.#stateAttributes()));
      else this.#draw();
    }
    #load() {
      if (this.#explicit) return this.#draw();
      const inline = this.querySelector(':scope > script[type="application/json"]');
      if (!inline && document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", () => this.#load(), { once: true });
        return;
      }
      if (inline) {
        this.#result = inline.textContent ?? "";
        return this.#draw();
      }
      const src = this.getAttribute("src");
      const job = this.getAttribute("job");
      if (src) this.#follow((signal) => this.#fetchDocument(src, signal));
      else if (job) this.#follow((signal) => this.#followJob(job, signal));
      else this.#message("hm-loading", "No result to show yet.", "status");
    }
    #follow(run) {
      this.#stopFollowing();
      const following = new AbortController();
      this.#following = following;
      run(following.signal).catch((error) => {
        if (following.signal.aborted) return;
        this.#fail(error instanceof Error ? error.message : String(error));
      });
    }
    #stopFollowing() {
      this.#following?.abort();
      this.#following = null;
    }
    async #fetchDocument(src, signal) {
      this.#message("hm-loading", "Loading the result…", "status");
      const response = await fetch(src, { signal, headers: this.#keyHeader() });
      if (!response.ok) throw new Error(`GET ${src} answered HTTP ${response.status}`);
      this.#result = await response.text();
      this.#draw();
    }
    async #followJob(job, signal) {
      const client = new HetaClient({ baseUrl: this.getAttribute("base-url") ?? "", apiKey: this.#key() ?? void 0 });
      this.#message("hm-loading", `Waiting for job ${job}…`, "status");
      if (!this.#methods && !this.getAttribute("methods")) {
        try {
          const served = await client.models({ signal });
          if (served.method_details) this.#methods = served.method_details;
        } catch {
        }
      }
      const result = await client.wait(job, { signal, onPartial: (partial) => this.#show(partial) });
      this.#show(result);
    }
    #show(document2) {
      this.#result = document2;
      this.#draw();
    }
    #key() {
      return this.#apiKey ?? this.getAttribute("api-key");
    }
    #keyHeader() {
      const key = this.#key();
      return key ? { Authorization: `Bearer ${key}` } : {};
    }
    #methodsAttribute() {
      const text = this.getAttribute("methods");
      if (!text) return {};
      try {
        return JSON.parse(text);
      } catch {
        return {};
      }
    }
    #stateAttributes() {
      const state = {};
      const component = this.getAttribute("component");
      const view = this.getAttribute("view");
      const row = this.getAttribute("row");
      if (component) state.component = component;
      if (view) state.view = view;
      if (row !== null && row !== "") state.row = Number(row);
      return state;
    }
    #draw() {
      if (this.#result === void 0) return;
      let document2;
      try {
        document2 = checkDocument(this.#result);
      } catch (error) {
        return this.#fail(error instanceof Error ? error.message : String(error));
      }
      this.#safely(() => {
        const start = this.#heatmap && this.#drawn === document2.job_id ? this.#heatmap.state : this.#stateAttributes();
        this.#error = null;
        this.#heatmap = render(this.#frame, document2, {
          methods: this.methods,
          title: this.getAttribute("heading"),
          compact: this.hasAttribute("compact"),
          state: start,
          onSelect: this.hasAttribute("selectable") ? (unit) => this.#emit("heta-select", unit) : void 0
        });
        this.#drawn = document2.job_id;
        this.#emit("heta-render", { partial: Boolean(document2.partial), stagesDone: document2.stages_done ?? [], jobId: document2.job_id ?? null });
      });
    }
    #drawn = void 0;
    /** Runs ``work``; an exception becomes the readable error in place (never one the host page sees). */
    #safely(work) {
      try {
        work();
      } catch (error) {
        this.#fail(`a part of the document has a shape this version of the element cannot draw (${error instanceof Error ? error.message : error})`);
      }
    }
    #fail(reason) {
      this.#heatmap = null;
      this.#error = `This attribution cannot be shown: ${reason}.`.replace(/\.\.$/, ".");
      this.#message("hm-error", this.#error, "alert");
      this.#emit("heta-error", { message: this.#error });
    }
    #message(kind, text, role) {
      const note = document.createElement("p");
      note.className = kind;
      note.setAttribute("role", role);
      note.textContent = text;
      this.#frame.className = "hm-frame";
      this.#frame.replaceChildren(note);
    }
    #emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
    }
  };
  function define(name = "heta-attribution") {
    if (typeof customElements !== "undefined" && !customElements.get(name)) customElements.define(name, HetaAttribution);
  }

  // src/component/index.ts
  define();

  // src/component/bundle.ts
  globalThis.HetaAttribution = { ...index_exports, HetaClient, HttpError, JobFailedError, NetworkError, ProblemError, parseEvents };
})();

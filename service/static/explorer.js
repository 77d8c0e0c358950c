/* The explorer page: ask (POST /jobs), follow (GET /jobs/{id}/events), cancel (DELETE /jobs/{id}),
   read (the <heta-attribution> element, the same one the HTML report and dashboards use), compare
   two methods, export, and the queue panel (GET /queue). Plain browser JavaScript: no build step
   here (the element is built by clients/typescript and committed), no external assets. */
(function () {
  "use strict";

  const H = window.HetaAttribution;
  const KEY = "heta-api-key";
  const QUEUE_EVERY_MS = 4000;
  const $ = (selector) => document.querySelector(selector);

  // examples for the builtin heta-demo: "which value is stored under the queried key?"
  const DEMO_EXAMPLES = [
    { label: "h=? (the README's)", text: "c=6 e=6 b=3 h=3 m=6 ? h", target: " 3" },
    { label: "b=?", text: "f=3 b=7 k=3 a=1 ? b", target: " 7" },
    { label: "g=? (8 pairs)", text: "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", target: " 2" },
    { label: "HETA vs integrated gradients", text: "c=6 e=6 b=3 h=3 m=6 ? h", target: " 3", compare: "integrated_gradients" },
  ];

  // ------------------------------------------------------------------ API

  class ApiProblem extends Error {
    constructor(status, body, retryAfter) {
      super(body.detail || `HTTP ${status}`);
      Object.assign(this, { status, body, code: body.code || "http_error", retryAfter });
    }
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function api(path, { method = "GET", body, raw = false, signal } = {}) {
    const headers = authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiProblem(0, { code: "unreachable", detail: "the server did not answer (is heta serve running?)" });
    }
    if (!response.ok) {
      let problem;
      try {
        problem = await response.json();
      } catch {
        problem = { code: "http_error", detail: response.statusText };
      }
      const error = new ApiProblem(response.status, problem, response.headers.get("Retry-After"));
      if (response.status === 401 || (response.status === 403 && error.code === "invalid_api_key")) askForKey(error);
      throw error;
    }
    return raw ? response : response.json();
  }

  /** Every problem the API can return, in words. */
  function describe(problem) {
    const { status, code, body } = problem;
    const detail = body.detail || "";
    const retry = problem.retryAfter ? ` Try again in ${problem.retryAfter} s.` : "";
    switch (status) {
      case 0: return `The server did not answer: ${detail}.`;
      case 401: return "This server needs an API key (401 missing_api_key). Enter it to continue.";
      case 403: return `The server refused this API key (403 ${code}): it is not one of the server's keys. Check it and enter it again.`;
      case 404: return `Not found (404 ${code}): ${detail}.`;
      case 409: return code === "cancelled" ? "The job was cancelled." : `Conflict (409 ${code}): ${detail}.`;
      case 413: return `The request is too large (413 ${code}): ${detail}.`;
      case 422: {
        const where = (body.errors || []).map((e) => `${e.loc.filter((p) => p !== "body").join(".")}: ${e.msg}`);
        const field = body.field ? ` The field “${body.field}” is the problem.` : "";
        return `The request cannot be run (422 ${code}): ${where.length ? where.join("; ") : detail}.${field}`;
      }
      case 429: return `Too many requests (429 ${code}): ${detail}.${retry}`;
      case 503: return `The service is unavailable (503 ${code}): ${detail}.${retry}`;
      case 504: return `The job missed its deadline (504 ${code}): ${detail}. Ask for less work (fewer samples, low rank, a window) or a longer deadline.`;
      case 500: return `The server failed (500 ${code}): ${detail}.`;
      default: return `${status} ${code}: ${detail}`;
    }
  }

  function showAlert(message, kind = "error") {
    const alert = $("#alert");
    alert.textContent = message;
    alert.className = `alert${kind === "info" ? " info" : ""}`;
    alert.hidden = !message;
  }

  function report(error) {
    if (error.name === "AbortError") return;
    if (error instanceof ApiProblem) showAlert(describe(error), error.code === "cancelled" ? "info" : "error");
    else {
      showAlert(`Something went wrong in the page: ${error.message}`);
      console.error(error);
    }
  }

  /** Server-sent events read with fetch (EventSource cannot send the API key header); each handler
   * gets its event's data as sent (the JSON export keeps the result byte for byte). */
  async function follow(jobId, handlers, signal) {
    const response = await api(`/jobs/${jobId}/events`, { raw: true, signal });
    for await (const { event, data } of H.parseEvents(response.body)) {
      if (handlers[event]) handlers[event](data);
    }
  }

  // ------------------------------------------------------------------ API key

  let retryAfterKey = null;

  function askForKey(problem) {
    const dialog = $("#key-dialog");
    const message = $("#key-message");
    message.textContent = describe(problem);
    message.classList.toggle("error", problem.status === 403);
    if (!dialog.open) dialog.showModal();
    $("#key-input").focus();
  }

  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("#key-dialog").close();
    $("#key-input").value = "";
    showAlert("");
    (retryAfterKey || loadModels)();
  });
  $("#key-cancel").addEventListener("click", () => $("#key-dialog").close());
  $("#key-button").addEventListener("click", () => {
    $("#key-message").textContent = "Enter the API key to use (leave the dialog with Cancel to keep the current one).";
    $("#key-message").classList.remove("error");
    $("#key-dialog").showModal();
  });

  // ------------------------------------------------------------------ the form

  const form = $("#ask");
  let served = null;

  function option(value, label) {
    const node = document.createElement("option");
    node.value = value;
    node.textContent = label ?? value;
    return node;
  }

  async function loadModels() {
    retryAfterKey = loadModels;
    try {
      served = await api("/models");
    } catch (error) {
      if (!(error instanceof ApiProblem && [401, 403].includes(error.status))) report(error);
      return;
    }
    retryAfterKey = null;
    const model = $("#model");
    model.replaceChildren(...served.models.map((m) => option(m.name, `${m.name} (${m.model_type}, ${m.workers} worker${m.workers === 1 ? "" : "s"})`)));
    if (served.default) model.value = served.default;
    const methods = served.methods.map((name) => option(name, `${name}${(served.method_details[name] || {}).signed ? " (signed)" : ""}`));
    $("#method").replaceChildren(...methods);
    $("#method").value = served.default_method;
    $("#compare").replaceChildren(option("", "— nothing —"), ...served.methods.map((name) => option(name)));
    showExamples();
    refreshQueue();
  }

  function showExamples() {
    const box = $("#examples");
    box.querySelectorAll("button").forEach((b) => b.remove());
    const demo = $("#model").value === "heta-demo";
    box.hidden = !demo;
    if (!demo) return;
    for (const example of DEMO_EXAMPLES) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = example.label;
      button.title = `${example.text} → "${example.target}"`;
      button.addEventListener("click", () => {
        setInput("text", example.text);
        setTarget("continuation", example.target);
        $("#compare").value = example.compare || "";
        if (!example.compare) $("#method").value = served.default_method;
        form.requestSubmit();
      });
      box.append(button);
    }
  }

  function setInput(kind, text) {
    form.querySelector(`input[name="input-kind"][value="${kind}"]`).checked = true;
    syncInputKind();
    if (text !== undefined) $("#text").value = text;
  }

  function setTarget(kind, value) {
    form.querySelector(`input[name="target-kind"][value="${kind}"]`).checked = true;
    if (kind === "continuation") $("#target-text").value = value;
    if (kind === "position") $("#target-position").value = value;
  }

  function syncInputKind() {
    const chat = form.querySelector('input[name="input-kind"]:checked').value === "chat";
    $("#text-input").hidden = chat;
    $("#chat-input").hidden = !chat;
    if (chat && !$("#messages").children.length) addMessage("user", $("#text").value);
  }

  function addMessage(role = "user", content = "") {
    const index = $("#messages").children.length + 1;
    const row = document.createElement("div");
    row.className = "message";
    const roles = document.createElement("select");
    roles.setAttribute("aria-label", `role of message ${index}`);
    roles.append(...["system", "user", "assistant", "tool"].map((r) => option(r)));
    roles.value = role;
    const text = document.createElement("textarea");
    text.rows = 2;
    text.value = content;
    text.setAttribute("aria-label", `content of message ${index}`);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `remove message ${index}`);
    remove.addEventListener("click", () => row.remove());
    row.append(roles, text, remove);
    $("#messages").append(row);
  }

  form.querySelectorAll('input[name="input-kind"]').forEach((r) => r.addEventListener("change", syncInputKind));
  $("#add-message").addEventListener("click", () => addMessage());
  $("#model").addEventListener("change", showExamples);

  function number(id) {
    const value = $(id).value.trim();
    return value === "" ? undefined : Number(value);
  }

  /** The POST /jobs body for ``method`` from the form. */
  function requestBody(method) {
    const body = { model: $("#model").value || undefined };
    if (form.querySelector('input[name="input-kind"]:checked').value === "chat") {
      body.messages = [...$("#messages").children].map((row) => ({ role: row.querySelector("select").value, content: row.querySelector("textarea").value }));
    } else body.text = $("#text").value;
    const target = form.querySelector('input[name="target-kind"]:checked').value;
    if (target === "position") body.target_position = number("#target-position");
    if (target === "continuation") body.target_text = $("#target-text").value;
    if (target === "generate") body.generate = number("#generate");
    if (target === "continuation" || target === "generate") body.target_mode = $("#target-mode").value;
    const config = { method, diagnostics: $("#diagnostics").checked, mask: $("#mask").value.trim() || undefined };
    config.granularity = [...form.querySelectorAll('input[name="granularity"]:checked')].map((c) => c.value);
    if (method === "heta") {
      Object.assign(config, {
        samples: number("#samples"), seed: number("#seed"), flow: $("#flow").value, normalize: $("#normalize").value,
        curvature: $("#curvature").value, curvature_layers: number("#curvature-layers"), low_rank: number("#low-rank"),
        window: number("#window"), overlap: number("#window") !== undefined ? number("#overlap") : undefined,
      });
    }
    if (method === "integrated_gradients") config.ig_steps = number("#ig-steps");
    body.config = config;
    return body;
  }

  // ------------------------------------------------------------------ jobs and progress

  const running = new Map(); // job id → panel

  function jobPanel(label) {
    const node = document.createElement("div");
    node.className = "card job";
    const name = document.createElement("span");
    name.className = "job-label";
    name.textContent = label;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", `progress of ${label}`);
    const status = document.createElement("span");
    status.className = "job-status";
    status.dataset.status = "submitting";
    status.textContent = "submitting…";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.className = "cancel";
    cancel.disabled = true;
    node.append(name, bar, status, cancel);
    $("#runs").append(node);
    const panel = {
      node, jobId: null, status: "submitting", progress: 0,
      update(state, progress) {
        if (state) panel.status = state;
        if (progress !== undefined && progress !== null) panel.progress = progress;
        bar.value = panel.progress;
        status.dataset.status = panel.status;
        const percent = `${Math.round(panel.progress * 100)} %`;
        status.textContent = panel.status === "running" ? `running · ${percent}` : panel.status === "done" ? "done · 100 %" : panel.status;
        cancel.disabled = !panel.jobId || ["done", "failed", "cancelled", "dead_lettered", "cancelling"].includes(panel.status);
      },
    };
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        const view = await api(`/jobs/${panel.jobId}`, { method: "DELETE" });
        panel.update(view.status);
      } catch (error) {
        report(error);
      }
    });
    return panel;
  }

  /** Queue ``body`` and follow its events to the end: {raw, result} or {problem}; ``onPartial(outcome)``
   * gets each partial result on the way. */
  async function runJob(body, panel, onPartial) {
    let accepted;
    try {
      accepted = await api("/jobs", { method: "POST", body });
    } catch (error) {
      panel.update(`refused (${error.status || "no answer"})`);
      throw error;
    }
    panel.jobId = accepted.job_id;
    panel.update(accepted.status, 0);
    return watch(accepted.job_id, panel, onPartial);
  }

  async function watch(jobId, panel, onPartial) {
    let outcome = null;
    Object.assign(panel, { jobId });
    panel.node.dataset.jobId = jobId;
    running.set(jobId, panel);
    try {
      await follow(jobId, {
        status: (data) => {
          const view = JSON.parse(data);
          panel.update(view.status, view.progress);
        },
        progress: (data) => panel.update(null, JSON.parse(data).progress),
        partial: (data) => {
          if (onPartial) onPartial({ raw: data, result: JSON.parse(data), jobId });
        },
        result: (data) => {
          outcome = { raw: data, result: JSON.parse(data), jobId };
          panel.update("done", 1);
        },
        problem: (data) => {
          const problem = JSON.parse(data);
          panel.update(problem.code === "cancelled" ? "cancelled" : problem.code === "draining" ? "interrupted" : "failed");
          outcome = { problem: new ApiProblem(problem.status, problem) };
        },
      });
    } finally {
      running.delete(jobId);
      refreshQueue();
    }
    if (!outcome) throw new ApiProblem(0, { code: "stream_closed", detail: "the event stream ended before the job did" });
    return outcome;
  }

  // ------------------------------------------------------------------ results

  function download(name, blob) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

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
  function showIn(slot, outcome, title) {
    const card = slot.firstElementChild;
    if (card && card.dataset.jobId === outcome.jobId) card.show(outcome);
    else slot.replaceChildren(resultCard(outcome, title));
  }

  function showAgreement(left, right) {
    const box = $("#agreement");
    const a = left.result.tokens.map((t) => (Array.isArray(t.score) ? t.score[0] : t.score));
    const b = right.result.tokens.map((t) => (Array.isArray(t.score) ? t.score[0] : t.score));
    const rho = H.spearman(a, b);
    const k = Math.min(3, a.length);
    const overlap = H.topOverlap(a, b, k);
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

  function clearResults() {
    $("#results").replaceChildren();
    $("#results").classList.remove("compare");
    $("#agreement").hidden = true;
    $("#runs").replaceChildren();
    $("#welcome").hidden = true;
  }

  async function explain(event) {
    event.preventDefault();
    showAlert("");
    const method = $("#method").value;
    const other = $("#compare").value;
    const methods = other && other !== method ? [method, other] : [method];
    clearResults();
    $("#explain").disabled = true;
    try {
      const panels = methods.map((m) => jobPanel(m));
      if ($("#runs").getBoundingClientRect().top < 0) $("#runs").scrollIntoView(); // the form can be scrolled far below it
      const slots = resultSlots(methods.length);
      const title = (m) => (methods.length > 1 ? m : null);
      // a HETA job's heatmap appears at its first partial result and is refined in place
      const settled = await Promise.allSettled(methods.map((m, i) => runJob(requestBody(m), panels[i], (o) => showIn(slots[i], o, title(m)))));
      const outcomes = [];
      settled.forEach((s, i) => {
        // a job that ended without its result: its partial map (if any) goes, the alert says why
        if (s.status === "rejected" || s.value.problem) slots[i].replaceChildren();
      });
      for (const s of settled) {
        if (s.status === "rejected") throw s.reason;
        if (s.value.problem) throw s.value.problem;
        outcomes.push(s.value);
      }
      showResults(outcomes, slots);
    } catch (error) {
      report(error);
    } finally {
      $("#explain").disabled = false;
    }
  }

  /** ``count`` empty places in #results, one per job, in order. */
  function resultSlots(count) {
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

  function showResults(outcomes, slots = resultSlots(outcomes.length)) {
    outcomes.forEach((o, i) => showIn(slots[i], o, outcomes.length > 1 ? o.result.method : null));
    if (outcomes.length > 1) showAgreement(outcomes[0], outcomes[1]);
  }

  form.addEventListener("submit", explain);

  // ------------------------------------------------------------------ queue panel

  function age(seconds) {
    if (seconds < 1) return "–";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    return `${Math.round(seconds / 60)} min`;
  }

  async function refreshQueue() {
    if (document.hidden || $("#key-dialog").open) return;
    let queue;
    try {
      queue = await api("/queue");
    } catch (error) {
      return; // the panel is informational: a failed refresh is retried on the next tick
    }
    $("#queue-models tbody").replaceChildren(...queue.models.map((m) => {
      const row = document.createElement("tr");
      row.dataset.model = m.model;
      for (const value of [m.model, m.queue_depth, age(m.oldest_job_age_s), `${m.workers_busy} / ${m.workers_idle}`]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    }));
    const list = $("#recent-jobs");
    list.replaceChildren(...queue.jobs.map((job) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.jobId = job.job_id;
      const text = document.createElement("span");
      text.className = "recent-text";
      text.textContent = `${job.method || "?"} · ${job.summary}`;
      const status = document.createElement("span");
      status.className = "job-status";
      status.dataset.status = job.status;
      status.textContent = job.status === "running" ? `running · ${Math.round(job.progress * 100)} %` : job.status;
      button.append(text, status);
      button.title = `job ${job.job_id}: open it`;
      button.addEventListener("click", () => openJob(job));
      item.append(button);
      return item;
    }));
    if (!queue.jobs.length) {
      const item = document.createElement("li");
      item.className = "hint";
      item.textContent = "none yet";
      list.append(item);
    }
  }

  async function openJob(job) {
    showAlert("");
    clearResults();
    try {
      const [slot] = resultSlots(1);
      const outcome = await watch(job.job_id, running.get(job.job_id) || jobPanel(job.method || job.job_id), (o) => showIn(slot, o, null));
      if (outcome.problem) {
        slot.replaceChildren();
        throw outcome.problem;
      }
      showResults([outcome], [slot]);
    } catch (error) {
      report(error);
    }
  }

  setInterval(refreshQueue, QUEUE_EVERY_MS);
  document.addEventListener("visibilitychange", refreshQueue);
  loadModels();
})();

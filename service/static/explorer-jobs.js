/* A job's progress card (bar, status, Cancel) and following a job's events to its result or problem. */

import { ApiProblem, api, follow, report } from "./explorer-api.js";
import { $ } from "./explorer-page.js";
import { refreshQueue } from "./explorer-queue.js";

export const running = new Map(); // job id → panel

export function jobPanel(label) {
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
export async function runJob(body, panel, onPartial) {
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

export async function watch(jobId, panel, onPartial) {
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
  } catch (error) {
    // the drain gate refused the event stream itself (the server began shutting down before the page
    // asked for it): the job is as interrupted as when an open stream ends with the same problem
    if (!(error instanceof ApiProblem && error.code === "draining")) throw error;
    panel.update("interrupted");
    outcome = { problem: error };
  } finally {
    running.delete(jobId);
    refreshQueue();
  }
  if (!outcome) throw new ApiProblem(0, { code: "stream_closed", detail: "the event stream ended before the job did" });
  return outcome;
}

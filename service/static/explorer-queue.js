/* The queue panel (GET /queue): per model the jobs waiting, the oldest one's age and the workers
   busy / idle, and the reader's recent jobs, refreshed every few seconds. */

import { api } from "./explorer-api.js";
import { $ } from "./explorer-page.js";

const QUEUE_EVERY_MS = 4000;
let openRecent = null; // what a click on a recent job does (the page's start passes openJob)

function age(seconds) {
  if (seconds < 1) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

export async function refreshQueue() {
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
    button.addEventListener("click", () => openRecent(job));
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

/** Refresh the panel from now on; ``openJob(job)`` is what clicking a recent job does. */
export function startQueue(openJob) {
  openRecent = openJob;
  setInterval(refreshQueue, QUEUE_EVERY_MS);
  document.addEventListener("visibilitychange", refreshQueue);
}

/* The explorer page: ask (POST /jobs), follow (GET /jobs/{id}/events), cancel (DELETE /jobs/{id}),
   read (the <heta-attribution> element, the same one the HTML report and dashboards use), compare
   two methods, export, and the queue panel (GET /queue). Plain browser JavaScript modules: no build
   step here (the element is built by clients/typescript and committed), no external assets.

   This module starts the page and holds its two ways to a result: Explain (the form) and a click on
   a recent job; the others, each imported here:
     explorer-api.js      requests, problems in words, the API key dialog, a job's events
     explorer-form.js     the Ask form and the POST /jobs body it makes
     explorer-models.js   GET /models: the model and method lists, the heta-demo examples
     explorer-jobs.js     a job's progress card, following a job to its result
     explorer-results.js  result cards, their exports, the agreement of two methods
     explorer-queue.js    the queue panel
     explorer-page.js     the DOM helpers they share */

import { report, whenKeyEntered } from "./explorer-api.js";
import { form, requestBody } from "./explorer-form.js";
import { jobPanel, runJob, running, watch } from "./explorer-jobs.js";
import { loadModels } from "./explorer-models.js";
import { $, showAlert } from "./explorer-page.js";
import { startQueue } from "./explorer-queue.js";
import { clearResults, resultSlots, showIn, showResults } from "./explorer-results.js";

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

form.addEventListener("submit", explain);
whenKeyEntered(loadModels);
startQueue(openJob);
loadModels();

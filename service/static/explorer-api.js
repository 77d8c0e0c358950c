/* Talking to the API: requests with the API key, every problem the API can return in words, the
   key dialog (a 401 or a refused key opens it), and a job's server-sent events. */

import { $, showAlert } from "./explorer-page.js";

const { parseEvents } = window.HetaAttribution;
const KEY = "heta-api-key";

export class ApiProblem extends Error {
  constructor(status, body, retryAfter) {
    super(body.detail || `HTTP ${status}`);
    Object.assign(this, { status, body, code: body.code || "http_error", retryAfter });
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function api(path, { method = "GET", body, raw = false, signal } = {}) {
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
export function describe(problem) {
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

export function report(error) {
  if (error.name === "AbortError") return;
  if (error instanceof ApiProblem) showAlert(describe(error), error.code === "cancelled" ? "info" : "error");
  else {
    showAlert(`Something went wrong in the page: ${error.message}`);
    console.error(error);
  }
}

/** Server-sent events read with fetch (EventSource cannot send the API key header); each handler
 * gets its event's data as sent (the JSON export keeps the result byte for byte). */
export async function follow(jobId, handlers, signal) {
  const response = await api(`/jobs/${jobId}/events`, { raw: true, signal });
  for await (const { event, data } of parseEvents(response.body)) {
    if (handlers[event]) handlers[event](data);
  }
}

// ------------------------------------------------------------------ the API key

// what to do once a key is entered (the page's start passes loadModels: this module cannot import it)
let afterKey = () => {};

export function whenKeyEntered(action) {
  afterKey = action;
}

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
  afterKey();
});
$("#key-cancel").addEventListener("click", () => $("#key-dialog").close());
$("#key-button").addEventListener("click", () => {
  $("#key-message").textContent = "Enter the API key to use (leave the dialog with Cancel to keep the current one).";
  $("#key-message").classList.remove("error");
  $("#key-dialog").showModal();
});

/**
 * The typed client of the HETA attribution service (types: src/schema.d.ts, generated from the
 * server's /openapi.json by `npm run gen`).
 *
 * Retries never run a job twice: each logical submit carries one `Idempotency-Key` through all of its
 * retries, so a connection dropped after the server accepted the job comes back with that same job.
 * 429 and 503 are retried after the server's `Retry-After` (else exponential back-off with jitter), as
 * are requests the server never answered; every other error answer rejects at once, typed.
 */
import type { components } from "./schema.js";
import { errorOf, HttpError, JobFailedError, NetworkError, ProblemError } from "./errors.js";
import { parseEvents } from "./sse.js";

export type Schemas = components["schemas"];
export type AttributeRequest = Schemas["AttributeRequest"];
export type BatchRequest = Schemas["BatchRequest"];
export type AttributionResult = Schemas["JobResult"];
export type BatchResult = Schemas["BatchResult"];
export type JobAccepted = Schemas["JobAccepted"];
export type JobView = Schemas["JobView"];
export type ModelsResponse = Schemas["ModelsResponse"];
export type Problem = Schemas["ProblemDetails"];

/** One event of GET /jobs/{id}/events, its data parsed. */
export type JobEvent =
  | { event: "status"; data: Omit<JobView, "result" | "error" | "partial"> }
  | { event: "progress"; data: { progress: number } }
  | { event: "partial"; data: AttributionResult }
  | { event: "result"; data: AttributionResult | BatchResult }
  | { event: "problem"; data: Problem };

export interface ClientOptions {
  /** where the service is, e.g. "http://127.0.0.1:8000" (empty: the page's own origin) */
  baseUrl?: string;
  /** sent as `Authorization: Bearer <key>` when the service has HETA_API_KEYS */
  apiKey?: string;
  /** retries of a 429 / 503 / unanswered request (default 4) */
  retries?: number;
  /** first back-off when the server gives no Retry-After, in ms (default 500; doubles per retry) */
  backoffMs?: number;
  /** the longest wait between retries, in ms (default 30 000) */
  maxBackoffMs?: number;
  /** another fetch (tests, proxies); default the global one */
  fetch?: typeof fetch;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface SubmitOptions extends CallOptions {
  /** one job per (API key, key): default a fresh UUID per call, kept through that call's retries */
  idempotencyKey?: string;
}

export interface WaitOptions extends CallOptions {
  /** called with each partial result of a HETA job while it runs */
  onPartial?: (result: AttributionResult) => void;
  /** called with the job's progress, 0-1 */
  onProgress?: (progress: number) => void;
}

const RETRY_STATUSES = new Set([429, 503]);
const FINAL = new Set(["done", "failed", "cancelled", "dead_lettered"]);

export class HetaClient {
  readonly baseUrl: string;
  readonly #headers: Record<string, string>;
  readonly #retries: number;
  readonly #backoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.#headers = options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {};
    this.#retries = options.retries ?? 4;
    this.#backoffMs = options.backoffMs ?? 500;
    this.#maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** POST /jobs: queue an attribution; its job id (202). */
  submit(body: AttributeRequest, options: SubmitOptions = {}): Promise<JobAccepted> {
    return this.#json("POST", "/jobs", { body, ok: [202], idempotencyKey: newKey(options), signal: options.signal });
  }

  /** POST /attribute, then (if the job outlived the request's `wait`) its events to the end: the result. */
  async attribute(body: AttributeRequest, options: SubmitOptions & WaitOptions = {}): Promise<AttributionResult> {
    const answer = await this.#json<AttributionResult | JobAccepted>("POST", "/attribute", {
      body, ok: [200, 202], idempotencyKey: newKey(options), signal: options.signal,
    });
    if ("tokens" in answer && !answer.partial) return answer;
    return (await this.wait(answer.job_id, options)) as AttributionResult;
  }

  /** POST /attribute/batch: many prompts as one job; every item's result or error. */
  async batch(body: BatchRequest, options: SubmitOptions & WaitOptions = {}): Promise<BatchResult> {
    const answer = await this.#json<BatchResult | JobAccepted>("POST", "/attribute/batch", {
      body, ok: [200, 202], idempotencyKey: newKey(options), signal: options.signal,
    });
    if ("items" in answer) return answer;
    return (await this.wait(answer.job_id, options)) as BatchResult;
  }

  /** GET /jobs/{id}: status, progress, and the result when done. */
  job(jobId: string, options: CallOptions = {}): Promise<JobView> {
    return this.#json("GET", `/jobs/${encodeURIComponent(jobId)}`, options);
  }

  /** DELETE /jobs/{id}: ask the job to stop; the job as it is then. */
  cancel(jobId: string, options: CallOptions = {}): Promise<JobView> {
    return this.#json("DELETE", `/jobs/${encodeURIComponent(jobId)}`, { ...options, ok: [200, 202] });
  }

  /** GET /models: the served models, the default one and the methods. */
  models(options: CallOptions = {}): Promise<ModelsResponse> {
    return this.#json("GET", "/models", options);
  }

  /** GET /jobs/{id}/events: the job's events (status, progress, partial, then result or problem), read
   * with fetch so the key travels in a header. */
  async *events(jobId: string, options: CallOptions = {}): AsyncGenerator<JobEvent> {
    const response = await this.#send("GET", `/jobs/${encodeURIComponent(jobId)}/events`, { signal: options.signal, accept: "text/event-stream" });
    if (!response.body) throw new NetworkError("the event stream has no body");
    for await (const raw of parseEvents(response.body)) {
      yield { event: raw.event, data: JSON.parse(raw.data) } as JobEvent;
    }
  }

  /** The job's result, following its events (reconnecting when a server drains); a job that ends
   * without one rejects with JobFailedError (its `code`: cancelled, deadline_exceeded, ...). */
  async wait(jobId: string, options: WaitOptions = {}): Promise<AttributionResult | BatchResult> {
    for (let attempt = 0; ; attempt++) {
      let problem: Problem | null = null;
      for await (const item of this.events(jobId, options)) {
        if (item.event === "result") return item.data;
        if (item.event === "partial") options.onPartial?.(item.data);
        else if (item.event === "progress") options.onProgress?.(item.data.progress);
        else if (item.event === "status") options.onProgress?.(item.data.progress);
        else if (item.event === "problem") problem = item.data;
      }
      const draining = problem?.code === "draining";
      if (problem && !draining) throw new JobFailedError(problem.status, problem as unknown as Record<string, unknown>);
      if (attempt >= this.#retries) {
        throw problem ? new ProblemError(problem.status, problem as unknown as Record<string, unknown>) : new NetworkError(`the event stream of job ${jobId} ended before the job did`);
      }
      // a draining server or a dropped stream: the job lives on in Redis; follow it again
      const view = await this.job(jobId, options);
      if (FINAL.has(view.status)) {
        if (view.status === "done" && view.result) return view.result;
        throw new JobFailedError(409, { code: view.error?.code ?? view.status, detail: view.error?.detail ?? `the job is ${view.status}` });
      }
      await sleep(this.#delay(attempt, null), options.signal);
    }
  }

  async #json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.#send(method, path, options);
    return (await response.json()) as T;
  }

  /** One call with retries (429, 503, no answer); the response, or a typed error. */
  async #send(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...this.#headers, Accept: options.accept ?? "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const ok = options.ok ?? [200];
    for (let attempt = 0; ; attempt++) {
      const last = attempt >= this.#retries;
      let response: Response;
      try {
        response = await this.#fetch(this.baseUrl + path, { method, headers, body, signal: options.signal });
      } catch (error) {
        if (options.signal?.aborted) throw error;
        if (last) throw new NetworkError(`${method} ${path}: the server did not answer`, { cause: error });
        await sleep(this.#delay(attempt, null), options.signal);
        continue;
      }
      if (ok.includes(response.status)) return response;
      const error = await errorOf(response);
      if (!RETRY_STATUSES.has(response.status) || last) throw error;
      await sleep(this.#delay(attempt, error), options.signal);
    }
  }

  #delay(attempt: number, error: ProblemError | HttpError | null): number {
    const after = error instanceof ProblemError ? error.retryAfter : null;
    if (after !== null) return Math.min(after * 1000, this.#maxBackoffMs);
    return Math.min(this.#backoffMs * 2 ** attempt, this.#maxBackoffMs) * (0.5 + Math.random() / 2);
  }
}

interface RequestOptions extends CallOptions {
  body?: unknown;
  ok?: number[];
  idempotencyKey?: string;
  accept?: string;
}

function newKey(options: SubmitOptions): string {
  return options.idempotencyKey ?? globalThis.crypto.randomUUID();
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

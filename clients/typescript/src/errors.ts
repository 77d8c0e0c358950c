/** What the service answered when it did not answer with what was asked for. */

/** A problem+json answer (RFC 9457) of the service, or a job that ended with one: `code` is stable. */
export class ProblemError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  /** the whole problem document (`errors`, `field`, `instance`, ... when the service sent them) */
  readonly problem: Record<string, unknown>;
  /** seconds the service asked to wait (`Retry-After`), when it said */
  readonly retryAfter: number | null;

  constructor(status: number, problem: Record<string, unknown>, retryAfter: number | null = null) {
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
}

/** The job ended failed, cancelled or dead-lettered: `code` is the job's error code. */
export class JobFailedError extends ProblemError {
  constructor(status: number, problem: Record<string, unknown>) {
    super(status, problem);
    this.name = "JobFailedError";
  }
}

/** An error answer that is not a problem document (a proxy's HTML page, a bare text): status and body kept. */
export class HttpError extends Error {
  readonly status: number;
  readonly body: string;
  readonly contentType: string | null;

  constructor(status: number, body: string, contentType: string | null) {
    super(`HTTP ${status}${contentType ? ` (${contentType})` : ""}: ${body.slice(0, 200)}`);
    this.name = "HttpError";
    this.status = status;
    this.body = body;
    this.contentType = contentType;
  }
}

/** The server did not answer at all (after the retries), or a stream ended before its job did. */
export class NetworkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NetworkError";
  }
}

/** `Retry-After` in seconds (delta-seconds or an HTTP date), or null. */
export function retryAfterSeconds(value: string | null): number | null {
  if (value === null || value.trim() === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

/** The typed error of a non-2xx answer: a ProblemError for problem+json, else an HttpError. */
export async function errorOf(response: Response): Promise<ProblemError | HttpError> {
  const body = await response.text();
  const type = response.headers.get("Content-Type");
  if (type && /json/i.test(type)) {
    try {
      const parsed: unknown = JSON.parse(body);
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed) && typeof (parsed as { code?: unknown }).code === "string") {
        return new ProblemError(response.status, parsed as Record<string, unknown>, retryAfterSeconds(response.headers.get("Retry-After")));
      }
    } catch {
      // not JSON after all: kept as the body of an HttpError
    }
  }
  return new HttpError(response.status, body, type);
}

export { HetaClient } from "./client.js";
export type {
  AttributeRequest, AttributionResult, BatchRequest, BatchResult, CallOptions, ClientOptions, JobAccepted, JobEvent, JobView,
  ModelsResponse, Problem, Schemas, SubmitOptions, WaitOptions,
} from "./client.js";
export { HttpError, JobFailedError, NetworkError, ProblemError } from "./errors.js";
export { parseEvents } from "./sse.js";
export type { components, paths } from "./schema.js";

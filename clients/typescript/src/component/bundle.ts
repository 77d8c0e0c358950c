/** The one-file bundle (heta-attribution.js): a classic script for pages without a build step — the
 * explorer, the HTML report (inlined), a Grafana HTML panel. It defines `<heta-attribution>` and
 * offers the client and the renderer's helpers as `window.HetaAttribution`. */
import * as component from "./index.js";
import { HetaClient, HttpError, JobFailedError, NetworkError, parseEvents, ProblemError } from "../index.js";

(globalThis as Record<string, unknown>).HetaAttribution = { ...component, HetaClient, HttpError, JobFailedError, NetworkError, ProblemError, parseEvents };

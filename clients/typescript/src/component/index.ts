/** The `<heta-attribution>` element (defined on import) and the renderer's helpers. */
import { define } from "./element.js";

export { define, HetaAttribution } from "./element.js";
export type { RenderDetail } from "./element.js";
export { checkDocument, colour, COMPONENTS, formatNumber, formatProbability, formatShare, ranking, render, spearman, topOverlap } from "./render.js";
export type { Heatmap, MethodInfo, RenderOptions, ResultDocument, Unit, ViewState } from "./render.js";

define();

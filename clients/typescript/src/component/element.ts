/**
 * `<heta-attribution>`: a HETA result drawn as the explorer draws it — heatmap, scale, legend,
 * component and granularity switches, tooltips, the `each` matrix, the trust table — in a shadow
 * root of its own, so any host page (plain HTML, React, Vue, a Grafana panel) shows the same pixels.
 *
 * The document comes from (first that is set): the `result` property, a `<script type="application/json">`
 * child, the `src` attribute (a URL of a result document), or `job` + `base-url` (+ the `apiKey`
 * property or `api-key` attribute): then the job's partial results are drawn as they stream and
 * refined in place. A document it cannot draw shows a readable error in place; nothing is thrown
 * into the host page.
 */
import { HetaClient } from "../client.js";
import { checkDocument, render, type Heatmap, type MethodInfo, type ResultDocument, type Unit, type ViewState } from "./render.js";
import css from "./styles.css";

const STATE_ATTRIBUTES = ["component", "view", "row"] as const;
const SOURCE_ATTRIBUTES = ["src", "job", "base-url", "api-key"];
const LOOK_ATTRIBUTES = ["heading", "selectable", "compact", "methods"];

export interface RenderDetail {
  partial: boolean;
  stagesDone: string[];
  jobId: string | null;
}

export class HetaAttribution extends HTMLElement {
  static observedAttributes = [...STATE_ATTRIBUTES, ...SOURCE_ATTRIBUTES, ...LOOK_ATTRIBUTES];

  readonly #frame: HTMLDivElement;
  #result: unknown = undefined;
  #explicit = false;
  #methods: Record<string, MethodInfo> | null = null;
  #apiKey: string | null = null;
  #heatmap: Heatmap | null = null;
  #following: AbortController | null = null;
  #error: string | null = null;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = css;
    this.#frame = document.createElement("div");
    this.#frame.className = "hm-frame";
    this.#frame.part.add("frame");
    root.append(style, this.#frame);
  }

  /** The result document drawn (set it to draw another; a partial result of the same job keeps the reader's choices). */
  get result(): unknown {
    return this.#result;
  }

  set result(document: unknown) {
    this.#result = document;
    this.#explicit = true;
    this.#stopFollowing();
    this.#draw();
  }

  /** Each method's `{signed, summary}` (GET /models' `method_details`); signed methods get a diverging scale. */
  get methods(): Record<string, MethodInfo> {
    return this.#methods ?? this.#methodsAttribute();
  }

  set methods(value: Record<string, MethodInfo>) {
    this.#methods = value;
    this.#draw();
  }

  /** The API key used in `job` mode (kept out of the DOM, unlike the `api-key` attribute). */
  set apiKey(value: string | null) {
    this.#apiKey = value;
    if (this.isConnected && this.getAttribute("job")) this.#load();
  }

  /** The reader's current choices: {component, view, row, focus}. */
  get state(): ViewState | null {
    return this.#heatmap?.state ?? null;
  }

  /** The message shown instead of a heatmap, or null. */
  get error(): string | null {
    return this.#error;
  }

  /** The drawn units and their values (numbers as in the document). */
  units(): Unit[] {
    return this.#heatmap?.units() ?? [];
  }

  values(): (number | null)[] {
    return this.#heatmap?.values() ?? [];
  }

  /** The heatmap as a canvas (for a PNG export). */
  canvas(): HTMLCanvasElement | null {
    return this.#heatmap?.canvas() ?? null;
  }

  connectedCallback(): void {
    this.#load();
  }

  disconnectedCallback(): void {
    this.#stopFollowing();
  }

  attributeChangedCallback(name: string, old: string | null, value: string | null): void {
    if (!this.isConnected || old === value) return;
    if (SOURCE_ATTRIBUTES.includes(name)) this.#load();
    else if ((STATE_ATTRIBUTES as readonly string[]).includes(name)) this.#safely(() => this.#heatmap?.set(this.#stateAttributes()));
    else this.#draw();
  }

  #load(): void {
    if (this.#explicit) return this.#draw();
    const inline = this.querySelector(':scope > script[type="application/json"]');
    if (!inline && document.readyState === "loading") {
      // defined before the parser reached the element's children: read them once they are there
      document.addEventListener("DOMContentLoaded", () => this.#load(), { once: true });
      return;
    }
    if (inline) {
      this.#result = inline.textContent ?? "";
      return this.#draw();
    }
    const src = this.getAttribute("src");
    const job = this.getAttribute("job");
    if (src) this.#follow((signal) => this.#fetchDocument(src, signal));
    else if (job) this.#follow((signal) => this.#followJob(job, signal));
    else this.#message("hm-loading", "No result to show yet.", "status");
  }

  #follow(run: (signal: AbortSignal) => Promise<void>): void {
    this.#stopFollowing();
    const following = new AbortController();
    this.#following = following;
    run(following.signal).catch((error: unknown) => {
      if (following.signal.aborted) return;
      this.#fail(error instanceof Error ? error.message : String(error));
    });
  }

  #stopFollowing(): void {
    this.#following?.abort();
    this.#following = null;
  }

  async #fetchDocument(src: string, signal: AbortSignal): Promise<void> {
    this.#message("hm-loading", "Loading the result…", "status");
    const response = await fetch(src, { signal, headers: this.#keyHeader() });
    if (!response.ok) throw new Error(`GET ${src} answered HTTP ${response.status}`);
    this.#result = await response.text();
    this.#draw();
  }

  async #followJob(job: string, signal: AbortSignal): Promise<void> {
    const client = new HetaClient({ baseUrl: this.getAttribute("base-url") ?? "", apiKey: this.#key() ?? undefined });
    this.#message("hm-loading", `Waiting for job ${job}…`, "status");
    if (!this.#methods && !this.getAttribute("methods")) {
      try {
        const served = (await client.models({ signal })) as { method_details?: Record<string, MethodInfo> };
        if (served.method_details) this.#methods = served.method_details;
      } catch {
        // without them every method gets the sequential scale; the job itself says what went wrong
      }
    }
    const result = await client.wait(job, { signal, onPartial: (partial) => this.#show(partial) });
    this.#show(result);
  }

  #show(document: unknown): void {
    this.#result = document;
    this.#draw();
  }

  #key(): string | null {
    return this.#apiKey ?? this.getAttribute("api-key");
  }

  #keyHeader(): Record<string, string> {
    const key = this.#key();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  #methodsAttribute(): Record<string, MethodInfo> {
    const text = this.getAttribute("methods");
    if (!text) return {};
    try {
      return JSON.parse(text);
    } catch {
      return {};
    }
  }

  #stateAttributes(): Partial<ViewState> {
    const state: Partial<ViewState> = {};
    const component = this.getAttribute("component");
    const view = this.getAttribute("view");
    const row = this.getAttribute("row");
    if (component) state.component = component as ViewState["component"];
    if (view) state.view = view as ViewState["view"];
    if (row !== null && row !== "") state.row = Number(row);
    return state;
  }

  #draw(): void {
    if (this.#result === undefined) return;
    let document: ResultDocument;
    try {
      document = checkDocument(this.#result);
    } catch (error) {
      return this.#fail(error instanceof Error ? error.message : String(error));
    }
    this.#safely(() => {
      const start = this.#heatmap && this.#drawn === document.job_id ? this.#heatmap.state : this.#stateAttributes();
      this.#error = null;
      this.#heatmap = render(this.#frame, document, {
        methods: this.methods,
        title: this.getAttribute("heading"),
        compact: this.hasAttribute("compact"),
        state: start,
        onSelect: this.hasAttribute("selectable") ? (unit) => this.#emit("heta-select", unit) : undefined,
      });
      this.#drawn = document.job_id;
      this.#emit<RenderDetail>("heta-render", { partial: Boolean(document.partial), stagesDone: document.stages_done ?? [], jobId: document.job_id ?? null });
    });
  }

  #drawn: unknown = undefined;

  /** Runs ``work``; an exception becomes the readable error in place (never one the host page sees). */
  #safely(work: () => void): void {
    try {
      work();
    } catch (error) {
      // the document passed the check, so some part of it has a shape this renderer does not know
      this.#fail(`a part of the document has a shape this version of the element cannot draw (${error instanceof Error ? error.message : error})`);
    }
  }

  #fail(reason: string): void {
    this.#heatmap = null;
    this.#error = `This attribution cannot be shown: ${reason}.`.replace(/\.\.$/, ".");
    this.#message("hm-error", this.#error, "alert");
    this.#emit("heta-error", { message: this.#error });
  }

  #message(kind: string, text: string, role: string): void {
    const note = document.createElement("p");
    note.className = kind;
    note.setAttribute("role", role);
    note.textContent = text;
    this.#frame.className = "hm-frame";
    this.#frame.replaceChildren(note);
  }

  #emit<T>(type: string, detail: T): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

/** Defines `<heta-attribution>` (once; a second bundle on the same page reuses the first definition). */
export function define(name = "heta-attribution"): void {
  if (typeof customElements !== "undefined" && !customElements.get(name)) customElements.define(name, HetaAttribution);
}

/** Types of render.js, the heatmap renderer (plain JavaScript, so the report can inline it as is). */
export interface MethodInfo {
  signed: boolean;
  summary: string;
}
export type Component = "score" | "flow" | "hessian" | "kl";
export type View = "token" | "word" | "sentence" | "span" | "message";
export interface ViewState {
  component: Component;
  view: View;
  row: number;
  focus: number | null;
}
export interface Unit {
  kind: string;
  label: string;
  start: number | null;
  end: number | null;
  positions: number[];
  item: Record<string, unknown>;
}
export interface RenderOptions {
  methods?: Record<string, MethodInfo>;
  title?: string | null;
  onSelect?: (unit: Unit) => void;
  compact?: boolean;
  state?: Partial<ViewState>;
}
export interface Heatmap {
  state: ViewState;
  signed: boolean;
  set(changes: Partial<ViewState>): void;
  values(): (number | null)[];
  units(): Unit[];
  canvas(): HTMLCanvasElement;
}
export type ResultDocument = Record<string, any>;
export const COMPONENTS: Record<Component, { label: string; help: string }>;
export const VIEWS: Record<View, string>;
export function checkDocument(input: unknown): ResultDocument;
export function render(container: HTMLElement, result: ResultDocument, options?: RenderOptions): Heatmap;
export function colour(value: number | null, max: number, signed: boolean): { css: string; text: string };
export function formatNumber(value: number | null): string;
export function formatProbability(p: number | null): string;
export function formatShare(share: number | null): string;
export function ranking(values: (number | null)[]): number[];
export function spearman(a: (number | null)[], b: (number | null)[]): number | null;
export function topOverlap(a: (number | null)[], b: (number | null)[], k: number): number;
export function units(result: ResultDocument, view: View): Unit[];
export function valueOf(unit: Unit, component: Component, row: number): number | null;
export function partialNote(result: ResultDocument): string | null;

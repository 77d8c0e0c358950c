/* Colours and numbers of the heatmap: the OKLCH scale with its text colours (WCAG AA), numbers and
   probabilities for people, and the rank agreement of two attributions. */

// ------------------------------------------------------------------ colour

// OKLCH → sRGB: lightness falls linearly with |value|, so equal steps look equal (perceptually
// uniform), and the strongest unit is always the darkest.
function oklch(L, C, h) {
  const a = C * Math.cos((h * Math.PI) / 180), b = C * Math.sin((h * Math.PI) / 180);
  const l = (L + 0.3963377774 * a + 0.2158037573 * b) ** 3;
  const m = (L - 0.1055613458 * a - 0.0638541728 * b) ** 3;
  const s = (L - 0.0894841775 * a - 1.291485548 * b) ** 3;
  const linear = [
    4.0767416621 * l - 3.3077115913 * m + 0.2309699292 * s,
    -1.2684380046 * l + 2.6097574011 * m - 0.3413193965 * s,
    -0.0041960863 * l - 0.7034186147 * m + 1.707614701 * s,
  ].map((c) => Math.min(1, Math.max(0, c)));
  const rgb = linear.map((c) => Math.round(255 * (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055)));
  const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  // white text below this luminance: both text colours keep a contrast ratio of about 4.5:1
  return { css: `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`, text: luminance < 0.18 ? "#ffffff" : "#000000" };
}

/** Colour of ``value`` on a scale up to ``max``: sequential (white → blue) or diverging (blue ← white → red). */
export function colour(value, max, signed) {
  if (value === null || value === undefined || !Number.isFinite(value) || !(max > 0)) return oklch(0.98, 0, 0);
  const t = Math.max(-1, Math.min(1, value / max));
  const strength = signed ? Math.abs(t) : Math.max(0, t);
  const hue = signed ? (t < 0 ? 255 : 35) : 265;
  return oklch(0.98 - 0.56 * strength, 0.125 * strength, hue);
}

// ------------------------------------------------------------------ numbers for people

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

/** 3 significant digits; outside [0.001, 100000) as m × 10ⁿ (never a bare "1.9e-07"). */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size >= 1e-3 && size < 1e5) return String(Number(value.toPrecision(3)));
  let exponent = Math.floor(Math.log10(size));
  let mantissa = Number((value / 10 ** exponent).toPrecision(3));
  if (Math.abs(mantissa) >= 10) {
    mantissa /= 10;
    exponent += 1;
  }
  const power = String(exponent).split("").map((c) => SUPERSCRIPT[c]).join("");
  return `${mantissa} × 10${power}`;
}

/** A probability: 3 significant digits kept (1.00, 0.940), tiny ones as m × 10ⁿ. */
export function formatProbability(p) {
  if (p === null || p === undefined) return "–";
  return Math.abs(p) >= 1e-3 ? p.toPrecision(3) : formatNumber(p);
}

// "from 1.00 to 1.00" says nothing: add digits until the two probabilities differ (up to 8)
export function formatProbabilities(a, b) {
  for (let digits = 3; digits <= 8; digits++) {
    if (a === null || b === null || a === b || Math.abs(a) < 1e-3 || Math.abs(b) < 1e-3) break;
    if (a.toPrecision(digits) !== b.toPrecision(digits)) return [a.toPrecision(digits), b.toPrecision(digits)];
  }
  return [formatProbability(a), formatProbability(b)];
}

export function formatShare(share) {
  if (share === null || !Number.isFinite(share)) return "";
  const percent = 100 * share;
  if (percent !== 0 && Math.abs(percent) < 0.1) return percent > 0 ? "<0.1 %" : ">−0.1 %";
  return `${percent.toFixed(1).replace("-", "−")} %`;
}

// ------------------------------------------------------------------ rank agreement

/** Positions best first (ties: earlier position first; nulls last), as the engine ranks. */
export function ranking(values) {
  return values
    .map((v, i) => [v === null || !Number.isFinite(v) ? -Infinity : v, i])
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .map(([, i]) => i);
}

function averageRanks(values) {
  const order = values.map((v, i) => [v, i]).sort((a, b) => a[0] - b[0]);
  const ranks = new Array(values.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) ranks[order[k][1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return ranks;
}

/** Spearman's ρ: Pearson's correlation of average ranks (ties share their mean rank). */
export function spearman(a, b) {
  const pairs = a.map((x, i) => [x, b[i]]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pairs.length < 2) return null;
  const ra = averageRanks(pairs.map((p) => p[0])), rb = averageRanks(pairs.map((p) => p[1]));
  const mean = (ra.length + 1) / 2;
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i] - mean) * (rb[i] - mean);
    da += (ra[i] - mean) ** 2;
    db += (rb[i] - mean) ** 2;
  }
  return da && db ? num / Math.sqrt(da * db) : null;
}

/** |top-k(a) ∩ top-k(b)| / k. */
export function topOverlap(a, b, k) {
  const size = Math.min(k, a.length);
  const top = new Set(ranking(a).slice(0, size));
  return ranking(b).slice(0, size).filter((i) => top.has(i)).length / size;
}

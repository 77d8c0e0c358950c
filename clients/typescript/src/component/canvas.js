/* The heatmap as a canvas, for a PNG export. */
import { COMPONENTS } from "./document.js";
import { colour, formatNumber } from "./scale.js";

// ------------------------------------------------------------------ PNG

/** The heatmap as a canvas (the page exports it as PNG): title, wrapped coloured units, legend. */
export function toCanvas(result, list, values, signed, state, methods) {
  const width = 960, pad = 16, lineHeight = 30, font = "16px system-ui, sans-serif";
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d");
  ctx.font = font;
  const max = Math.max(0, ...values.filter(Number.isFinite).map(Math.abs));
  const boxes = [];
  let x = pad, y = pad + 40;
  const place = (label, fill, ink, outline) => {
    const w = ctx.measureText(label).width + 10;
    if (x + w > width - pad) {
      x = pad;
      y += lineHeight;
    }
    boxes.push({ label, x, y, w, fill, ink, outline });
    x += w + 4;
  };
  list.forEach((u, i) => {
    const c = colour(values[i], max, signed);
    place(u.label, c.css, c.text, false);
  });
  result.targets.forEach((t) => place(t.text ?? String(t.id), "#ffffff", "#111111", true));
  canvas.width = width;
  canvas.height = y + lineHeight + 70;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = "bold 16px system-ui, sans-serif";
  ctx.fillStyle = "#111111";
  const targets = result.targets.map((t) => t.text ?? t.id).join(" ");
  ctx.fillText(`${result.method} · ${COMPONENTS[state.component].label} · explaining "${targets}" · ${result.meta.model}`, pad, pad + 16);
  ctx.font = font;
  ctx.textBaseline = "middle";
  for (const b of boxes) {
    ctx.fillStyle = b.fill;
    ctx.fillRect(b.x, b.y, b.w, lineHeight - 6);
    if (b.outline) {
      ctx.strokeStyle = "#111111";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(b.x + 0.5, b.y + 0.5, b.w - 1, lineHeight - 7);
      ctx.setLineDash([]);
    }
    ctx.fillStyle = b.ink;
    ctx.fillText(b.label, b.x + 5, b.y + (lineHeight - 6) / 2);
  }
  const top = y + lineHeight + 14, low = signed ? -max : 0;
  for (let i = 0; i < 200; i++) {
    ctx.fillStyle = colour(low + ((max - low) * i) / 199, max, signed).css;
    ctx.fillRect(pad + i * 2, top, 2, 16);
  }
  ctx.fillStyle = "#111111";
  ctx.textBaseline = "alphabetic";
  const middle = formatNumber((low + max) / 2);
  ctx.fillText(formatNumber(low), pad, top + 36);
  ctx.fillText(middle, pad + 200 - ctx.measureText(middle).width / 2, top + 36);
  ctx.fillText(formatNumber(max), pad + 400 - ctx.measureText(formatNumber(max)).width, top + 36);
  return canvas;
}

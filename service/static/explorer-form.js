/* The Ask form: plain text or chat messages, what to explain, the method's options, and the
   POST /jobs body they make. */

import { $, option } from "./explorer-page.js";

export const form = $("#ask");

export function setInput(kind, text) {
  form.querySelector(`input[name="input-kind"][value="${kind}"]`).checked = true;
  syncInputKind();
  if (text !== undefined) $("#text").value = text;
}

export function setTarget(kind, value) {
  form.querySelector(`input[name="target-kind"][value="${kind}"]`).checked = true;
  if (kind === "continuation") $("#target-text").value = value;
  if (kind === "position") $("#target-position").value = value;
}

function syncInputKind() {
  const chat = form.querySelector('input[name="input-kind"]:checked').value === "chat";
  $("#text-input").hidden = chat;
  $("#chat-input").hidden = !chat;
  if (chat && !$("#messages").children.length) addMessage("user", $("#text").value);
}

function addMessage(role = "user", content = "") {
  const index = $("#messages").children.length + 1;
  const row = document.createElement("div");
  row.className = "message";
  const roles = document.createElement("select");
  roles.setAttribute("aria-label", `role of message ${index}`);
  roles.append(...["system", "user", "assistant", "tool"].map((r) => option(r)));
  roles.value = role;
  const text = document.createElement("textarea");
  text.rows = 2;
  text.value = content;
  text.setAttribute("aria-label", `content of message ${index}`);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "small";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `remove message ${index}`);
  remove.addEventListener("click", () => row.remove());
  row.append(roles, text, remove);
  $("#messages").append(row);
}

form.querySelectorAll('input[name="input-kind"]').forEach((r) => r.addEventListener("change", syncInputKind));
$("#add-message").addEventListener("click", () => addMessage());

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

/** The POST /jobs body for ``method`` from the form. */
export function requestBody(method) {
  const body = { model: $("#model").value || undefined };
  if (form.querySelector('input[name="input-kind"]:checked').value === "chat") {
    body.messages = [...$("#messages").children].map((row) => ({ role: row.querySelector("select").value, content: row.querySelector("textarea").value }));
  } else body.text = $("#text").value;
  const target = form.querySelector('input[name="target-kind"]:checked').value;
  if (target === "position") body.target_position = number("#target-position");
  if (target === "continuation") body.target_text = $("#target-text").value;
  if (target === "generate") body.generate = number("#generate");
  if (target === "continuation" || target === "generate") body.target_mode = $("#target-mode").value;
  const config = { method, diagnostics: $("#diagnostics").checked, mask: $("#mask").value.trim() || undefined };
  config.granularity = [...form.querySelectorAll('input[name="granularity"]:checked')].map((c) => c.value);
  if (method === "heta") {
    Object.assign(config, {
      samples: number("#samples"), seed: number("#seed"), flow: $("#flow").value, normalize: $("#normalize").value,
      curvature: $("#curvature").value, curvature_layers: number("#curvature-layers"), low_rank: number("#low-rank"),
      window: number("#window"), overlap: number("#window") !== undefined ? number("#overlap") : undefined,
    });
  }
  if (method === "integrated_gradients") config.ig_steps = number("#ig-steps");
  body.config = config;
  return body;
}

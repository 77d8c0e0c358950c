/* What the server runs (GET /models): the model, method and compare lists, and the heta-demo
   examples that fill the form and explain in one click. */

import { ApiProblem, api, report } from "./explorer-api.js";
import { form, setInput, setTarget } from "./explorer-form.js";
import { $, option } from "./explorer-page.js";
import { refreshQueue } from "./explorer-queue.js";

// examples for the builtin heta-demo: "which value is stored under the queried key?"
const DEMO_EXAMPLES = [
  { label: "h=? (the README's)", text: "c=6 e=6 b=3 h=3 m=6 ? h", target: " 3" },
  { label: "b=?", text: "f=3 b=7 k=3 a=1 ? b", target: " 7" },
  { label: "g=? (8 pairs)", text: "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", target: " 2" },
  { label: "HETA vs integrated gradients", text: "c=6 e=6 b=3 h=3 m=6 ? h", target: " 3", compare: "integrated_gradients" },
];

// GET /models' answer, once loaded (the result cards read its method_details)
export let served = null;

export async function loadModels() {
  try {
    served = await api("/models");
  } catch (error) {
    if (!(error instanceof ApiProblem && [401, 403].includes(error.status))) report(error);
    return;
  }
  const model = $("#model");
  model.replaceChildren(...served.models.map((m) => option(m.name, `${m.name} (${m.model_type}, ${m.workers} worker${m.workers === 1 ? "" : "s"})`)));
  if (served.default) model.value = served.default;
  const methods = served.methods.map((name) => option(name, `${name}${(served.method_details[name] || {}).signed ? " (signed)" : ""}`));
  $("#method").replaceChildren(...methods);
  $("#method").value = served.default_method;
  $("#compare").replaceChildren(option("", "— nothing —"), ...served.methods.map((name) => option(name)));
  showExamples();
  refreshQueue();
}

function showExamples() {
  const box = $("#examples");
  box.querySelectorAll("button").forEach((b) => b.remove());
  const demo = $("#model").value === "heta-demo";
  box.hidden = !demo;
  if (!demo) return;
  for (const example of DEMO_EXAMPLES) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = example.label;
    button.title = `${example.text} → "${example.target}"`;
    button.addEventListener("click", () => {
      setInput("text", example.text);
      setTarget("continuation", example.target);
      $("#compare").value = example.compare || "";
      if (!example.compare) $("#method").value = served.default_method;
      form.requestSubmit();
    });
    box.append(button);
  }
}

$("#model").addEventListener("change", showExamples);

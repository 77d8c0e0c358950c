/* Small DOM helpers the explorer's modules share: find an element, make an <option>, show the alert
   line, save a file. */

export const $ = (selector) => document.querySelector(selector);

export function option(value, label) {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = label ?? value;
  return node;
}

export function showAlert(message, kind = "error") {
  const alert = $("#alert");
  alert.textContent = message;
  alert.className = `alert${kind === "info" ? " info" : ""}`;
  alert.hidden = !message;
}

export function download(name, blob) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

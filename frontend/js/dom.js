// Building elements without innerHTML, so text from jobs and files is never parsed as markup.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function badge(state) {
  return el("span", { class: `badge ${state}`, dataset: { state } }, state);
}

export function setBadge(node, state) {
  if (node.dataset.state === state) return;
  node.className = `badge ${state}`;
  node.dataset.state = state;
  node.textContent = state;
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function byId(id) {
  return document.getElementById(id);
}

/** Show an error notice in `container` (or clear it when `error` is null). */
export function showError(container, error, title = "Something went wrong") {
  container.replaceChildren();
  container.hidden = !error;
  if (!error) return;
  container.append(el("strong", { text: title }), el("span", { text: error.message || String(error) }));
}

/** A button that copies the text of element `sourceId`; where the clipboard is refused, it selects it. */
export function copyButton(buttonId, sourceId) {
  byId(buttonId).addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(byId(sourceId).textContent);
      byId(buttonId).textContent = "Copied";
    } catch (_) {
      window.getSelection().selectAllChildren(byId(sourceId));
    }
  });
}

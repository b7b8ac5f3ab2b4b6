// Parameters and sweeps typed as JSON on the Upload page's zip form (sent as the `params` and
// `sweep` form fields), and the sweep page's address.

export const sweepUrl = (id) => `/sweep.html?id=${encodeURIComponent(id)}`;

/** A JSON object from a text field, or undefined when empty; throws a readable Error otherwise. */
export function readJsonField(node, what, { list = false } = {}) {
  const text = node.value.trim();
  if (!text) return undefined;
  let value;
  try {
    value = JSON.parse(text);
  } catch (_) {
    throw new Error(`${what} must be JSON, e.g. ${list ? '{"alpha": [0.1, 0.2]}' : '{"alpha": 0.5}'}.`);
  }
  const isObject = value !== null && typeof value === "object";
  if (!isObject || (!list && Array.isArray(value))) {
    throw new Error(`${what} must be a JSON object${list ? " of lists, or a list of objects" : ""}.`);
  }
  return value;
}


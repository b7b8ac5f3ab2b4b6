// Previews of result files: images inline, CSV/TSV as a table, text as text (the start only).

import { fileUrl, request } from "./api.js";
import { el } from "./dom.js";
import { formatBytes, plural } from "./format.js";
import { parseDelimited, wholeLines } from "./csv.js";

const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"]);
const TABLE_TYPES = { "text/csv": ",", "text/tab-separated-values": "\t" };
const TEXT_TYPES = new Set(["application/json", "application/yaml", "application/toml", "application/x-yaml"]);
const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
const TABLE_PREVIEW_BYTES = 256 * 1024;
const TABLE_PREVIEW_ROWS = 200;
const TEXT_PREVIEW_BYTES = 64 * 1024;
const SMALL_IMAGE_PX = 240;

/** "image", "table", "text", or null when the file is not shown inline. */
export function previewKind(file) {
  if (IMAGE_TYPES.has(file.type)) return file.size <= MAX_IMAGE_BYTES ? "image" : null;
  if (file.type in TABLE_TYPES) return "table";
  if (file.type.startsWith("text/") || TEXT_TYPES.has(file.type) || file.type.endsWith("+json")) return "text";
  return null;
}

async function fetchStart(jobId, file, maxBytes) {
  const response = await request(fileUrl(jobId, file.name, { max_bytes: maxBytes }));
  const text = new TextDecoder("utf-8").decode(await response.arrayBuffer());
  return { text, truncated: response.headers.get("X-Truncated") === "true" };
}

/** The image in a frame of its own size from the start (no jump when it loads); a click opens it full-size. */
function imageBody(jobId, file) {
  const sized = file.width > 0 && file.height > 0;
  const image = el("img", { src: fileUrl(jobId, file.name), alt: file.name, decoding: "async",
    width: sized ? String(file.width) : null, height: sized ? String(file.height) : null });
  const frame = el("a", { class: "image-frame loading", href: fileUrl(jobId, file.name), target: "_blank", rel: "noopener",
    title: "Open full-size", "aria-label": `Open ${file.name} full-size`,
    style: sized ? `aspect-ratio: ${file.width} / ${file.height}; max-width: min(100%, ${file.width}px)` : null },
  el("span", { class: "image-placeholder", "aria-hidden": "true" },
    sized ? `${file.width} × ${file.height} px · ${formatBytes(file.size)}` : `${formatBytes(file.size)}`), image);
  image.addEventListener("load", () => {
    frame.classList.remove("loading");
    image.title = `${image.naturalWidth} × ${image.naturalHeight} px`;
    if (!image.naturalWidth || image.naturalWidth >= SMALL_IMAGE_PX) return;
    // Small plots are enlarged so they can be read; pixels stay sharp, vectors are redrawn.
    const wide = image.naturalWidth * Math.floor((SMALL_IMAGE_PX * 2) / image.naturalWidth);
    image.width = wide;
    image.removeAttribute("height");
    frame.style.maxWidth = `${wide}px`;
    if (file.type !== "image/svg+xml") image.classList.add("pixelated");
  });
  image.addEventListener("error", () => frame.replaceWith(el("p", { class: "muted" }, "This image cannot be shown.")));
  return { body: el("div", { class: "body image" }, frame), note: null };
}

/** Sort a preview table's rows by one column: numbers as numbers, the rest as text; again reverses. */
function sortTable(table, index, button) {
  const body = table.tBodies[0];
  const rows = [...body.rows];
  const values = rows.map((row) => row.cells[index]?.textContent ?? "");
  const numeric = values.every((value) => value.trim() === "" || Number.isFinite(Number(value)));
  const ascending = button.closest("th").getAttribute("aria-sort") !== "ascending";
  const order = rows.map((row, at) => [row, values[at]]).sort(([, a], [, b]) => {
    const result = numeric ? Number(a) - Number(b) : a.localeCompare(b, undefined, { numeric: true });
    return ascending ? result : -result;
  });
  for (const th of table.tHead.rows[0].cells) th.setAttribute("aria-sort", "none");
  button.closest("th").setAttribute("aria-sort", ascending ? "ascending" : "descending");
  body.append(...order.map(([row]) => row));
}

async function tableBody(jobId, file) {
  const { text, truncated } = await fetchStart(jobId, file, TABLE_PREVIEW_BYTES);
  const rows = parseDelimited(truncated ? wholeLines(text) : text,
    { delimiter: TABLE_TYPES[file.type], maxRows: TABLE_PREVIEW_ROWS + 1 });
  if (!rows.length) return { body: el("div", { class: "body" }, el("p", { class: "muted" }, "The file is empty.")), note: null };
  const [head, ...data] = rows;
  const shown = data.slice(0, TABLE_PREVIEW_ROWS);
  const table = el("table", { class: "csv-preview" },
    el("thead", {}, el("tr", {}, head.map((cell, index) => el("th", { scope: "col", "aria-sort": "none" },
      el("button", { type: "button", class: "sort", onclick: (event) => sortTable(table, index, event.currentTarget) }, cell))))),
    el("tbody", {}, shown.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))));
  const partial = truncated || data.length > shown.length;
  const note = partial ? `First ${plural(shown.length, "row")} shown; the file is ${formatBytes(file.size)}. Download it for the rest.`
    : `${plural(shown.length, "row")}.`;
  return { body: el("div", { class: "body" }, table), note };
}

async function textBody(jobId, file) {
  const { text, truncated } = await fetchStart(jobId, file, TEXT_PREVIEW_BYTES);
  const note = truncated ? `First ${formatBytes(TEXT_PREVIEW_BYTES)} of ${formatBytes(file.size)} shown. Download the file for the rest.` : null;
  const body = text ? el("pre", {}, text) : el("p", { class: "muted" }, "The file is empty.");
  return { body: el("div", { class: "body" }, body), note };
}

const RENDERERS = { image: imageBody, table: tableBody, text: textBody };

/** A preview card for one file; its content loads in the background. */
export function previewCard(jobId, file, { onClose }) {
  const kind = previewKind(file);
  const card = el("article", { class: "preview", dataset: { file: file.name, kind }, tabindex: "-1" },
    el("header", {},
      el("h3", {}, file.name, " ", el("span", { class: "muted small" }, formatBytes(file.size))),
      el("div", { class: "button-row" },
        el("a", { class: "button small", href: fileUrl(jobId, file.name, { download: 1 }), download: "",
          "aria-label": `Download ${file.name}` }, "Download"),
        el("button", { type: "button", class: "small", onclick: onClose, "aria-label": `Close the preview of ${file.name}` },
          "Close"))),
    el("div", { class: "body muted" }, "Loading…"));
  Promise.resolve(RENDERERS[kind](jobId, file)).then(({ body, note }) => {
    card.querySelector(".body").replaceWith(body);
    if (note) card.append(el("div", { class: "note" }, note));
  }).catch((error) => {
    card.querySelector(".body").replaceWith(el("div", { class: "body" },
      el("p", { class: "muted" }, `The preview cannot be loaded: ${error.message}`)));
  });
  return card;
}

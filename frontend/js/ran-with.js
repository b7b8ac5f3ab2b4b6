// "Provenance": the uploaded project (its files, viewable, and its zip) and its sha256, where it came
// from (a command or a git commit), its data sets, the Python version and the exact packages of the
// job's environment, and the unit, host and executor it ran on (the job's `provenance`).

import { getJSON, request } from "./api.js";
import { byId, el } from "./dom.js";
import { formatBytes } from "./format.js";

const VIEW_BYTES = 256 * 1024;
const projectUrl = (id) => `/api/jobs/${encodeURIComponent(id)}/project`;
const projectFileUrl = (id, name) => `${projectUrl(id)}/files/${name.split("/").map(encodeURIComponent).join("/")}`;

async function viewFile(job, file, button) {
  const viewer = byId("project-file");
  const response = await request(`${projectFileUrl(job.id, file.name)}?max_bytes=${VIEW_BYTES}`);
  const text = new TextDecoder("utf-8").decode(await response.arrayBuffer());
  const cut = response.headers.get("X-Truncated") === "true";
  viewer.replaceChildren(
    el("div", { class: "card-head" }, el("h3", { class: "mono" }, file.name),
      el("button", { type: "button", class: "small", onclick: () => { viewer.hidden = true; button.focus(); } }, "Close")),
    el("pre", { class: "file-text", tabindex: "0" }, text),
    cut ? el("p", { class: "muted small" }, `The first ${formatBytes(VIEW_BYTES)} are shown; download the project for the rest.`) : null);
  viewer.hidden = false;
  viewer.scrollIntoView({ block: "nearest" });
}

async function showProjectFiles(job) {
  const box = byId("project-files");
  if (!box.hidden) { box.hidden = true; return; }
  box.hidden = false;
  box.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  try {
    const { files } = await getJSON(`${projectUrl(job.id)}/files`);
    box.replaceChildren(el("ul", { class: "project-tree" }, files.map((file) => {
      const button = el("button", { type: "button", class: "link-button mono", "aria-label": `View ${file.name}` }, file.name);
      button.addEventListener("click", () => viewFile(job, file, button).catch((error) => {
        byId("project-file").hidden = false;
        byId("project-file").replaceChildren(el("p", { class: "muted" }, `This file cannot be shown: ${error.message}`));
      }));
      return el("li", {}, button, el("span", { class: "muted small" }, ` ${formatBytes(file.size)}`));
    })));
  } catch (error) {
    box.replaceChildren(el("p", { class: "muted" }, `The project's files cannot be listed: ${error.message}`));
  }
}

function packagesTable(packages) {
  if (!packages.length) return el("p", { class: "muted", id: "packages-none" }, "No packages beyond the standard library.");
  return el("div", { class: "table-wrap packages-wrap" }, el("table", { id: "packages-table" },
    el("caption", { class: "visually-hidden" }, "Packages installed in the job's environment"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Package"), el("th", { scope: "col" }, "Version"))),
    el("tbody", {}, packages.map(([name, version]) => el("tr", {}, el("td", { class: "mono" }, name),
      el("td", { class: "mono" }, version))))));
}

function originText(record) {
  if (record.command) return `command ${record.command.name}${record.command.digest ? ` (digest ${record.command.digest.slice(0, 12)})` : ""}`;
  if (record.git) return `${record.git.url} at ${record.git.commit || "?"}`;
  return "uploaded zip";
}

/** The job's data sets: each name with its digest (short, the full one on hover), its size and owner. */
function datasetItems(datasets) {
  return datasets.map((set) => el("li", { dataset: { dataset: set.name || "" } },
    el("strong", {}, set.name || "?"), " ",
    el("span", { class: "mono", title: set.sha256 || "" }, (set.sha256 || "").slice(0, 12)),
    set.size !== undefined ? el("span", { class: "muted" }, ` · ${formatBytes(set.size)}`) : null,
    set.owner ? el("span", { class: "muted" }, ` · ${set.owner}`) : null));
}

function showOrigin(record, job) {
  byId("ran-sha256").textContent = record.upload_sha256 || "—";
  byId("ran-origin").textContent = originText(record);
  // The job's own list (resolved at the submit, with sizes) is known before the record is written.
  const datasets = (job.datasets && job.datasets.length ? job.datasets : record.datasets) || [];
  byId("ran-datasets").replaceChildren(datasets.length
    ? el("ul", { class: "dataset-list", id: "job-datasets" }, ...datasetItems(datasets)) : "none");
  byId("ran-executor").textContent = record.executor || "—";
}

let shownFor = null;

/** Draw the card once per job and attempt outcome (the packages come with the run's outcome). */
export function renderRanWith(job) {
  const ran = job.ran_with || null;
  const signature = `${job.id}|${ran ? ran.python : ""}|${ran ? ran.packages.length : ""}|${job.expired_at}|`
    + `${(job.provenance || {}).executor}|${(job.datasets || []).length}`;
  if (shownFor === signature) return;
  shownFor = signature;
  const projectKept = !job.expired_at;
  byId("ran-project").replaceChildren(...(projectKept ? [
    el("button", { type: "button", class: "small", id: "view-project", "aria-controls": "project-files",
      onclick: () => showProjectFiles(job) }, "View its files"), " ",
    el("a", { class: "button small", id: "download-project", href: projectUrl(job.id), download: "" },
      `Download the project (${formatBytes(job.upload_size)})`),
  ] : [el("span", { class: "muted" }, "removed after the retention period")]));
  showOrigin(job.provenance || {}, job);
  byId("ran-python").textContent = ran && ran.python ? `Python ${ran.python}` : "—";
  byId("ran-unit").textContent = ran && ran.unit ? ran.unit : job.unit || "—";
  byId("ran-host").textContent = ran && ran.host ? ran.host : "—";
  const packages = byId("ran-packages");
  if (!ran) {
    packages.replaceChildren(el("p", { class: "muted" }, "The environment's packages are listed once the job has run."));
    return;
  }
  byId("ran-packages-count").textContent = `(${ran.packages.length})`;
  packages.replaceChildren(packagesTable(ran.packages));
}

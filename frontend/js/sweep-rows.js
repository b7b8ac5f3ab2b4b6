// Results page: each sweep as one row with its counts, which opens to list its jobs.

import { getJSON, jobUrl } from "./api.js";
import { badge, byId, el, showError } from "./dom.js";
import { plural } from "./format.js";
import { sweepUrl } from "./params-fields.js";

const body = byId("sweeps-table").tBodies[0];

function paramsText(params, varied) {
  return varied.map((name) => `${name}=${JSON.stringify(params[name])}`).join(", ");
}

async function toggle(row, sweep, button) {
  const open = button.getAttribute("aria-expanded") === "true";
  const next = row.nextElementSibling;
  if (next && next.classList.contains("sweep-jobs")) next.remove();
  button.setAttribute("aria-expanded", String(!open));
  if (open) return;
  const detail = await getJSON(`/api/sweeps/${encodeURIComponent(sweep.id)}`);
  const list = el("ul", {}, detail.jobs.map((job) => el("li", { dataset: { jobId: job.id } },
    badge(job.state), " ", el("a", { href: jobUrl(job.id) }, paramsText(job.params, detail.varied) || job.id))));
  row.after(el("tr", { class: "sweep-jobs" }, el("td", { colspan: "7" }, list)));
}

function rowFor(sweep) {
  const button = el("button", { type: "button", class: "small", "aria-expanded": "false" },
    `${sweep.name} (${plural(sweep.total, "job")})`);
  const row = el("tr", { dataset: { sweepId: sweep.id } },
    el("td", {}, button), el("td", {}, String(sweep.total)),
    ...["queued", "running", "succeeded", "failed"].map((state) => el("td", {}, String(sweep.counts[state]))),
    el("td", {}, el("a", { href: sweepUrl(sweep.id) }, "Open")));
  button.addEventListener("click", () => toggle(row, sweep, button).catch(
    (error) => showError(byId("sweeps-error"), error, "The sweep's jobs could not be listed")));
  return row;
}

async function start() {
  try {
    const { sweeps } = await getJSON("/api/sweeps?per_page=10");
    body.replaceChildren(...sweeps.map(rowFor));
    byId("sweeps-section").hidden = sweeps.length === 0;
  } catch (error) {
    showError(byId("sweeps-error"), error, "The sweeps could not be listed");
    byId("sweeps-section").hidden = false;
  }
}

start();

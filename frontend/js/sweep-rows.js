// Results page: each sweep as one row with its counts, which opens to list its jobs.

import { getJSON, jobUrl } from "./api.js";
import { badge, byId, el, showError } from "./dom.js";
import { plural } from "./format.js";
import { sweepUrl } from "./params-fields.js";

const list = byId("sweeps-list");

function paramsText(params, varied) {
  return varied.map((name) => `${name}=${JSON.stringify(params[name])}`).join(", ");
}

async function showJobs(details, sweep) {
  if (!details.open || details.querySelector(".sweep-jobs")) return;
  const detail = await getJSON(`/api/sweeps/${encodeURIComponent(sweep.id)}`);
  details.append(el("ul", { class: "sweep-jobs" }, detail.jobs.map((job) => el("li", { dataset: { jobId: job.id } },
    badge(job.state), " ", el("a", { href: jobUrl(job.id) }, paramsText(job.params, detail.varied) || job.id)))));
}

function counts(sweep) {
  return ["queued", "running", "succeeded", "failed", "cancelled"]
    .filter((state) => sweep.counts[state]).map((state) => `${sweep.counts[state]} ${state}`).join(", ");
}

function rowFor(sweep) {
  const details = el("details", {},
    el("summary", {}, el("strong", {}, sweep.name), ` · ${plural(sweep.total, "job")}: ${counts(sweep)}`));
  details.addEventListener("toggle", () => showJobs(details, sweep).catch(
    (error) => showError(byId("sweeps-error"), error, "The sweep's jobs could not be listed")));
  return el("li", { dataset: { sweepId: sweep.id } }, details,
    el("a", { href: sweepUrl(sweep.id), class: "small" }, "Open the sweep's page"));
}

async function start() {
  try {
    const { sweeps } = await getJSON("/api/sweeps?per_page=10");
    list.replaceChildren(...sweeps.map(rowFor));
    byId("sweeps-section").hidden = sweeps.length === 0;
  } catch (error) {
    showError(byId("sweeps-error"), error, "The sweeps could not be listed");
    byId("sweeps-section").hidden = false;
  }
}

start();

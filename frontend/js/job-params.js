// Job page: the job's parameters (what code.py read from params.json), the command and sweep it
// came from, and "run again" with other parameters once it has ended.

import { getJSON, jobUrl, sendJSON } from "./api.js";
import { byId, el, showError } from "./dom.js";
import { isFinal } from "./format.js";
import { readJsonField, sweepUrl } from "./params-fields.js";

const jobId = new URLSearchParams(window.location.search).get("id");

function render(job) {
  const names = Object.keys(job.params || {});
  byId("params-table").tBodies[0].replaceChildren(...(names.length ? names.map((name) => el("tr", {},
    el("th", { scope: "row" }, name), el("td", { class: "mono" }, JSON.stringify(job.params[name]))))
    : [el("tr", {}, el("td", { class: "muted" }, "None: params.json held {}."))]));
  const origin = byId("params-origin");
  origin.replaceChildren();
  if (job.command) {
    origin.append(`From the command ${job.command} (files ${job.command_digest.slice(0, 12)}).`);
  }
  if (job.sweep_id) {
    origin.append(" Part of ", el("a", { href: sweepUrl(job.sweep_id) }, `sweep ${job.sweep_id}`), ".");
  }
  byId("params-edit").value = JSON.stringify(job.params || {}, null, 1);
  byId("params-rerun").hidden = !isFinal(job.state) || Boolean(job.expired_at);
  byId("params-section").hidden = false;
}

async function rerun() {
  const errorBox = byId("params-error");
  showError(errorBox, null);
  try {
    const params = readJsonField(byId("params-edit"), "Parameters") || {};
    const job = await sendJSON(`/api/jobs/${encodeURIComponent(jobId)}/rerun`, "POST", { params });
    window.location.assign(jobUrl(job.id));
  } catch (error) {
    showError(errorBox, error, error.status ? "The server refused these parameters" : "Check the parameters");
  }
}

async function start() {
  if (!jobId) return;
  byId("params-run").addEventListener("click", rerun);
  try {
    render(await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`));
  } catch (_) {
    // the job page itself says why the job cannot be shown
  }
}

start();

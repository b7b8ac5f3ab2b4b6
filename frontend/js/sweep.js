// A sweep's page: how many of its jobs are where, a sortable table of every job with its
// parameters and metrics as columns, and cancel / re-run failed / download everything.

import "./account-menu.js";
import { getJSON, jobUrl, sendJSON } from "./api.js";
import { badge, byId, el, showError } from "./dom.js";
import { formatDuration, isFinal, plural } from "./format.js";
import { startPolling } from "./poll.js";

const sweepId = new URLSearchParams(window.location.search).get("id");
const STATES = ["queued", "running", "paused", "succeeded", "failed", "cancelled"];
let sweep = null;
let sort = { key: null, descending: false }; // key: "param:<name>", "metric:<name>", "state" or "duration"
let poller = null;

const apiUrl = (path = "") => `/api/sweeps/${encodeURIComponent(sweepId)}${path}`;

function shown(value) {
  if (value === undefined || value === null) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function sortValue(job, key) {
  const [kind, name] = key.split(/:(.*)/s);
  if (kind === "param") return job.params[name];
  if (kind === "metric") return job.metrics[name];
  if (kind === "state") return job.state;
  return job.duration_s;
}

function compare(a, b) {
  const missingA = a === undefined || a === null;
  const missingB = b === undefined || b === null;
  if (missingA || missingB) return missingA - missingB; // jobs without the value go last either way
  if (typeof a === "number" && typeof b === "number") return a - b;
  return shown(a).localeCompare(shown(b), undefined, { numeric: true });
}

function sortedJobs() {
  const jobs = [...sweep.jobs];
  if (!sort.key) return jobs;
  jobs.sort((x, y) => {
    const a = sortValue(x, sort.key);
    const b = sortValue(y, sort.key);
    const missing = (a === undefined || a === null) || (b === undefined || b === null);
    return missing || !sort.descending ? compare(a, b) : compare(b, a);
  });
  return jobs;
}

function header(label, key) {
  const active = sort.key === key;
  const direction = active ? (sort.descending ? "descending" : "ascending") : "none";
  const button = el("button", { type: "button", class: "sort", dataset: { sort: key } },
    label, active ? (sort.descending ? " ▼" : " ▲") : "");
  button.addEventListener("click", () => {
    sort = { key, descending: sort.key === key ? !sort.descending : key.startsWith("metric:") };
    render();
  });
  return el("th", { scope: "col", "aria-sort": direction }, button);
}

function renderTable() {
  const params = sweep.varied;
  const metrics = sweep.metric_names;
  byId("sweep-table").tHead.replaceChildren(el("tr", {},
    ...params.map((name) => header(name, `param:${name}`)),
    header("State", "state"), header("Duration", "duration"),
    ...metrics.map((name) => header(name, `metric:${name}`)),
    el("th", { scope: "col" }, "Job")));
  const rows = sortedJobs().map((job) => el("tr", { dataset: { jobId: job.id } },
    ...params.map((name) => el("td", { class: "mono" }, shown(job.params[name]))),
    el("td", {}, badge(job.state)),
    el("td", {}, job.duration_s === null ? "—" : formatDuration(job.duration_s)),
    ...metrics.map((name) => el("td", { class: "number", dataset: { metric: name } }, shown(job.metrics[name]))),
    el("td", {}, el("a", { href: jobUrl(job.id) }, job.id))));
  byId("sweep-table").tBodies[0].replaceChildren(...rows);
}

function render() {
  document.title = `${sweep.name} · Sweep · NIAS`;
  byId("sweep-name").textContent = sweep.name;
  byId("crumb-name").textContent = sweep.name;
  byId("sweep-id").textContent = sweep.id;
  const over = sweep.varied.length ? ` over ${sweep.varied.join(", ")}` : "";
  byId("sweep-headline").textContent = `${plural(sweep.total, "job")}${over}`
    + (sweep.command ? ` · command ${sweep.command}` : "");
  byId("sweep-counts").replaceChildren(...STATES.map((state) => el("div", { dataset: { state } },
    el("dt", {}, state), el("dd", {}, String(sweep.counts[state] || 0)))));
  const running = sweep.jobs.some((job) => !isFinal(job.state));
  byId("sweep-cancel").hidden = !running;
  byId("sweep-rerun").hidden = !sweep.counts.failed;
  byId("sweep-download").href = apiUrl("/results");
  renderTable();
  byId("sweep-view").hidden = false;
}

async function refresh() {
  sweep = await getJSON(apiUrl());
  render();
  return sweep.jobs.some((job) => !isFinal(job.state) || job.result_pending);
}

async function act(button, path) {
  showError(byId("action-error"), null);
  button.disabled = true;
  try {
    sweep = await sendJSON(apiUrl(path), "POST", {});
    render();
    if (poller) poller.stop();
    poller = startPolling(refresh);
  } catch (error) {
    showError(byId("action-error"), error, "The sweep could not be changed");
  } finally {
    button.disabled = false;
  }
}

async function start() {
  if (!sweepId) {
    showError(byId("page-error"), new Error("This address names no sweep."), "No sweep");
    return;
  }
  try {
    await refresh();
  } catch (error) {
    showError(byId("page-error"), error, "The sweep could not be shown");
    return;
  }
  byId("sweep-cancel").addEventListener("click", (event) => act(event.currentTarget, "/cancel"));
  byId("sweep-rerun").addEventListener("click", (event) => act(event.currentTarget, "/rerun-failed"));
  poller = startPolling(refresh);
}

start();

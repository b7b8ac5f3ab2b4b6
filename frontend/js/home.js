// Home: the queue at a glance, the latest jobs and this server's limits; for admins, a sentence
// while a processing unit runs jobs without a sandbox (as the Admin page's banner says).

import "./account-menu.js";
import { ApiError, getJSON, getLimits, getMe, jobUrl, jobsQuery } from "./api.js";
import { badge, byId, el, setText, showError } from "./dom.js";
import { formatAgo, formatClock, formatDuration, plural } from "./format.js";
import { renderJobRows } from "./job-rows.js";
import { startPolling } from "./poll.js";
import { renderPools } from "./pools.js";

const RECENT_COLUMNS = ["name", "state", "submitted", "duration"]; // a queued job's place shows in its state
let summaryMissing = false;

/** Counts from `GET /api/jobs?state=…` totals, for a server without `/api/summary`. */
async function countsFromJobList() {
  const states = ["queued", "running"];
  const answers = await Promise.all(states.map((state) => getJSON(jobsQuery({ state, per_page: 1 }))));
  return Object.fromEntries(states.map((state, index) => [state, answers[index].total]));
}

async function loadSummary() {
  if (!summaryMissing) {
    try {
      return await getJSON("/api/summary");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      summaryMissing = true;
    }
  }
  return { counts: await countsFromJobList(), units: null };
}

function renderUnits(units) {
  const list = byId("unit-list");
  if (units === null) {
    setText(byId("units-busy"), "–");
    setText(byId("units-idle"), "–");
    list.replaceChildren(el("li", { class: "muted" }, "Unit information unavailable."));
    return;
  }
  const count = (state) => units.filter((unit) => unit.state === state).length;
  setText(byId("units-busy"), String(count("busy")));
  setText(byId("units-idle"), String(count("idle")));
  if (!units.length) {
    list.replaceChildren(el("li", { class: "muted" }, "No processing unit has reported yet."));
    return;
  }
  list.replaceChildren(...units.map((unit) => el("li", { dataset: { unit: unit.name } },
    el("span", {}, el("strong", {}, unit.name), " ",
      unit.job_id ? el("a", { href: jobUrl(unit.job_id), class: "small" },
        unit.job_state === "paused" ? `holds paused job ${unit.job_id}` : `running ${unit.job_id}`) : null),
    el("span", {},
      unit.state === "offline" ? el("span", { class: "muted small" }, `last seen ${formatAgo(unit.last_seen)} `) : null,
      badge(unit.state)))));
}

/** For admins: one sentence naming the online units that run jobs without a sandbox. */
async function showSandboxNote(units) {
  const note = byId("sandbox-note");
  const bare = (units || []).filter((unit) => unit.sandbox === "none" && unit.state !== "offline")
    .map((unit) => unit.name);
  const me = bare.length ? await getMe().catch(() => null) : null;
  note.hidden = !(me && me.role === "admin");
  if (note.hidden) return;
  note.textContent = `${bare.join(", ")} ${bare.length === 1 ? "runs" : "run"} jobs without a sandbox, so a job `
    + "sees the files, processes and network of its host (see the Admin page).";
}

async function refreshQueue() {
  const live = byId("queue-live");
  try {
    const summary = await loadSummary();
    setText(byId("count-queued"), String(summary.counts.queued ?? 0));
    setText(byId("count-running"), String(summary.counts.running ?? 0));
    setText(byId("count-paused"), String(summary.counts.paused ?? 0));
    renderUnits(summary.units);
    renderPools(byId("pool-list"), summary.pools);
    await showSandboxNote(summary.units);
    showError(byId("queue-error"), null);
    live.className = "live";
    live.lastChild.textContent = `Updated ${formatClock(new Date())}`;
  } catch (error) {
    live.className = "live stale";
    live.lastChild.textContent = "Not updating";
    showError(byId("queue-error"), error, "The queue cannot be read right now");
    throw error;
  }
}

async function refreshRecent() {
  const answer = await getJSON(jobsQuery({ per_page: 6 }));
  const empty = ["No jobs yet. ", el("a", { href: "/upload.html" }, "Upload your first project"), "."];
  renderJobRows(byId("recent-jobs").tBodies[0], answer.jobs, RECENT_COLUMNS, empty);
}

async function showLimits() {
  const list = byId("limits");
  try {
    const limits = await getLimits();
    list.replaceChildren(
      el("li", {}, `upload up to ${limits.max_upload_mb} MB`),
      el("li", {}, `at most ${plural(limits.max_files, "file")}`),
      el("li", {}, `${limits.max_unpacked_mb} MB unpacked`),
      el("li", {}, `${formatDuration(limits.job_timeout_s)} per job`),
    );
  } catch (error) {
    list.replaceChildren(el("li", {}, "Limits unavailable"));
  }
}

showLimits();
startPolling(async () => {
  await Promise.all([refreshQueue(), refreshRecent()]);
}, { intervalMs: 3000 });

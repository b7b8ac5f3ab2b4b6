// Results: every job as a row with its controls, filtered by state, name and (for admins) owner,
// paged; rows change in place as the server's events arrive, with a slow poll as a safety net.

import "./account-menu.js";
import { getJSON, getMe, jobUrl, jobsQuery, request, sendJSON } from "./api.js";
import { byId, el, setText, showError } from "./dom.js";
import { STATES, formatClock, isFinal } from "./format.js";
import { headerRow, renderJobRows, updateJobRow } from "./job-rows.js";
import { followJobs, isStale } from "./live.js";
import { notifyIfEnded } from "./notify.js";
import { startPolling } from "./poll.js";

const DEFAULT_PER_PAGE = "20";
const MAX_PER_PAGE = 100;
const SEARCH_DELAY_MS = 250;
const EVENT_REFRESH_DELAY_MS = 300;
const STREAM_POLL_MS = 15000; // a safety net while events arrive (new uploads are not announced)
const FALLBACK_POLL_MS = 3000; // while the event stream is down

const SORTS = ["submitted", "name", "state", "duration", "unit", "priority"];
const DATE = /^\d{4}-\d\d-\d\d$/;
const table = byId("jobs-table");
const view = readView();
const shown = new Map(); // the jobs on this page, by id, as last heard of
let columns = ["select", "name", "state", "submitted", "duration", "result", "actions"];
const selected = new Set();
let me = null;
let ownerEmails = new Map();
let lastAnswer = null;
let poller = null;
let stream = null;
let refreshTimer = null;

function readView() {
  const params = new URLSearchParams(window.location.search);
  const perPage = parseInt(params.get("per_page"), 10);
  return {
    state: STATES.includes(params.get("state")) ? params.get("state") : "",
    q: params.get("q") || "",
    mine: ["1", "true"].includes(params.get("mine")) ? "1" : "",
    page: Math.max(1, parseInt(params.get("page"), 10) || 1),
    per_page: perPage >= 1 && perPage <= MAX_PER_PAGE ? String(perPage) : DEFAULT_PER_PAGE,
    sort: SORTS.includes(params.get("sort")) ? params.get("sort") : "submitted",
    order: params.get("order") === "asc" ? "asc" : "desc",
    since: DATE.test(params.get("since") || "") ? params.get("since") : "",
    until: DATE.test(params.get("until") || "") ? params.get("until") : "",
  };
}

/** Keep the address in step with the view, so it can be bookmarked or shared. */
function writeView() {
  const params = new URLSearchParams();
  if (view.state) params.set("state", view.state);
  if (view.q) params.set("q", view.q);
  if (view.mine) params.set("mine", "1");
  if (view.page > 1) params.set("page", view.page);
  if (view.per_page !== DEFAULT_PER_PAGE) params.set("per_page", view.per_page);
  if (view.sort !== "submitted" || view.order !== "desc") {
    params.set("sort", view.sort);
    params.set("order", view.order);
  }
  if (view.since) params.set("since", view.since);
  if (view.until) params.set("until", view.until);
  const query = params.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${query ? `?${query}` : ""}`);
}

function emptyMessage() {
  if (view.state || view.q || view.mine || view.since || view.until) return "No jobs match these filters.";
  return ["No jobs yet. ", el("a", { href: "/upload.html" }, "Upload your first project"), "."];
}

function ownerName(id) {
  if (!id) return "";
  if (me && id === me.id) return `${me.email} (you)`;
  return ownerEmails.get(id) || id;
}

const rowContext = {
  ownerName,
  selected,
  onSelect: (job, on) => {
    if (on) selected.add(job.id);
    else selected.delete(job.id);
    renderBulkBar();
  },
  actions: {
    get errorBox() { return byId("list-error"); },
    onDone: (answer, action) => {
      if (answer && action.makesNewJob) {
        showNotice(["Started again as ", el("a", { href: jobUrl(answer.id) }, answer.name), "."]);
        scheduleRefresh();
      } else if (answer) {
        showJob(answer);
      } else {
        scheduleRefresh();
      }
    },
  },
};

function showNotice(parts) {
  const box = byId("list-notice");
  box.replaceChildren(...parts);
  box.hidden = false;
}

function renderPager(answer) {
  const first = answer.total ? (answer.page - 1) * answer.per_page + 1 : 0;
  const last = Math.min(answer.page * answer.per_page, answer.total);
  const pages = Math.max(1, Math.ceil(answer.total / answer.per_page));
  setText(byId("page-info"), answer.total
    ? `${first}–${last} of ${answer.total} · page ${answer.page} of ${pages}`
    : "0 jobs");
  byId("prev-page").disabled = answer.page <= 1;
  byId("next-page").disabled = answer.page >= pages;
}

function showLive() {
  const live = byId("list-live");
  if (stream && stream.open) {
    live.className = "live";
    live.lastChild.textContent = "Live";
  } else {
    live.className = "live stale";
    live.lastChild.textContent = lastAnswer ? `Updated ${formatClock(new Date())}` : "Connecting…";
  }
}

async function refresh() {
  const asked = { ...view };
  try {
    const answer = await getJSON(jobsQuery({ ...asked, ...localDays(asked), sweep: "none" })); // sweeps have rows of their own
    if (JSON.stringify(asked) !== JSON.stringify(view)) return true; // the view changed meanwhile
    const pages = Math.max(1, Math.ceil(answer.total / answer.per_page));
    if (view.page > pages) {
      view.page = pages;
      writeView();
      return refresh();
    }
    lastAnswer = answer;
    const now = Date.now();
    shown.clear();
    for (const job of answer.jobs) shown.set(job.id, { ...job, fetchedAt: now });
    for (const id of [...selected]) if (!shown.has(id)) selected.delete(id);
    renderJobRows(table.tBodies[0], [...shown.values()], columns, emptyMessage(), rowContext);
    renderPager(answer);
    renderBulkBar();
    showError(byId("list-error"), null);
    showLive();
    return true;
  } catch (error) {
    const live = byId("list-live");
    live.className = "live stale";
    live.lastChild.textContent = "Not updating";
    showError(byId("list-error"), error, "The list cannot be loaded right now");
    throw error;
  }
}

/** The chosen days, from midnight here to the next midnight here, as the server's UTC times. */
function localDays({ since, until }) {
  const midnight = (day, plusDays = 0) => {
    const date = new Date(`${day}T00:00:00`);
    date.setDate(date.getDate() + plusDays);
    return date.toISOString();
  };
  return { since: since ? midnight(since) : "", until: until ? midnight(until, 1) : "" };
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => poller.now(), EVENT_REFRESH_DELAY_MS);
}

function matchesView(job) {
  if (job.sweep_id) return false; // listed with its sweep
  if (view.state && job.state !== view.state) return false;
  if (view.q && !job.name.toLowerCase().includes(view.q.toLowerCase())) return false;
  if (view.since || view.until) return shown.has(job.id); // dates: the server decides
  if (view.mine && me && job.owner !== me.id) return false;
  return true;
}

/** A job as an event or an action describes it: redraw its row, or reload the page of rows when
 * it joins or leaves this view (so paging and totals stay right). */
function showJob(job) {
  if (isStale(shown.get(job.id), job)) return; // sent before the list this page already has
  notifyIfEnded(job);
  const fresh = { ...job, fetchedAt: Date.now() };
  if (shown.has(job.id)) {
    shown.set(job.id, fresh);
    updateJobRow(table.tBodies[0], fresh, columns, rowContext);
    if (!matchesView(job)) scheduleRefresh();
  } else if (matchesView(job)) {
    scheduleRefresh();
  }
}

function changeView(changes) {
  Object.assign(view, changes);
  writeView();
  byId("list-notice").hidden = true;
  if ("sort" in changes) drawHeader();
  poller.now();
}

function sortBy(key) {
  const order = view.sort === key ? (view.order === "asc" ? "desc" : "asc") : (key === "submitted" ? "desc" : "asc");
  changeView({ sort: key, order, page: 1 });
}

function selectAll(on) {
  for (const id of shown.keys()) {
    if (on) selected.add(id);
    else selected.delete(id);
  }
  for (const job of shown.values()) updateJobRow(table.tBodies[0], job, columns, rowContext);
  renderBulkBar();
}

function drawHeader() {
  table.tHead.replaceChildren(headerRow(columns, { sort: view.sort, order: view.order, onSort: sortBy }));
}

function renderBulkBar() {
  byId("bulk-bar").hidden = selected.size === 0;
  setText(byId("bulk-count"), `${selected.size} selected`);
  const all = byId("select-all");
  if (all) all.checked = shown.size > 0 && [...shown.keys()].every((id) => selected.has(id));
}

/** Do `perform(job)` to every selected job; report how many it worked for and why not for the rest. */
async function runBulk(label, perform) {
  const jobs = [...selected].map((id) => shown.get(id)).filter(Boolean);
  const failures = [];
  for (const job of jobs) {
    try {
      await perform(job);
      selected.delete(job.id);
    } catch (error) {
      failures.push(`${job.name}: ${error.message}`);
    }
  }
  const done = jobs.length - failures.length;
  showNotice([`${label}: ${done} of ${jobs.length} ${jobs.length === 1 ? "job" : "jobs"}.`]);
  showError(byId("list-error"), failures.length ? new Error(failures.join(" · ")) : null, `Not done for ${failures.length}`);
  renderBulkBar();
  poller.now();
}

function wireBulk() {
  byId("select-all").addEventListener("change", (event) => selectAll(event.target.checked));
  byId("bulk-clear").addEventListener("click", () => {
    selected.clear();
    for (const job of shown.values()) updateJobRow(table.tBodies[0], job, columns, rowContext);
    renderBulkBar();
  });
  byId("bulk-cancel").addEventListener("click", () => {
    const count = selected.size;
    if (!window.confirm(`Cancel ${count} ${count === 1 ? "job" : "jobs"}? Running ones are stopped; what they wrote to output/ is kept.`)) return;
    runBulk("Cancelled", (job) => (isFinal(job.state) ? Promise.reject(new Error(`already ${job.state}`))
      : sendJSON(`/api/jobs/${encodeURIComponent(job.id)}/state`, "PUT", { state: "cancelled" })));
  });
  byId("bulk-delete").addEventListener("click", () => {
    const count = selected.size;
    if (!window.confirm(`Delete ${count} ${count === 1 ? "job" : "jobs"} for good? Their uploads, logs and results are removed.`)) return;
    runBulk("Deleted", (job) => request(`/api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" }));
  });
  byId("bulk-note").addEventListener("click", () => {
    const note = window.prompt("A short note for the selected jobs (empty removes it):", "");
    if (note === null) return;
    runBulk("Noted", (job) => sendJSON(`/api/jobs/${encodeURIComponent(job.id)}/note`, "PUT", { note }));
  });
}

function wire() {
  const stateFilter = byId("state-filter");
  const search = byId("search");
  const perPage = byId("per-page");
  const mine = byId("only-mine");
  stateFilter.value = view.state;
  search.value = view.q;
  mine.checked = Boolean(view.mine);
  if (![...perPage.options].some((option) => option.value === view.per_page)) {
    perPage.add(new Option(view.per_page, view.per_page), 0);
  }
  perPage.value = view.per_page;
  stateFilter.addEventListener("change", () => changeView({ state: stateFilter.value, page: 1 }));
  for (const key of ["since", "until"]) {
    const input = byId(`${key}-filter`);
    input.value = view[key];
    input.addEventListener("change", () => {
      const day = input.value.trim();
      const bad = day !== "" && !DATE.test(day);
      if (bad) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
      if (!bad) changeView({ [key]: day, page: 1 });
    });
  }
  perPage.addEventListener("change", () => changeView({ per_page: perPage.value, page: 1 }));
  mine.addEventListener("change", () => changeView({ mine: mine.checked ? "1" : "", page: 1 }));
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => changeView({ q: search.value.trim(), page: 1 }), SEARCH_DELAY_MS);
  });
  byId("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    changeView({ q: search.value.trim(), page: 1 });
  });
  byId("prev-page").addEventListener("click", () => changeView({ page: Math.max(1, view.page - 1) }));
  byId("next-page").addEventListener("click", () => lastAnswer && changeView({ page: view.page + 1 }));
}

/** Admins see everyone's jobs: an owner column, e-mails for ids, and "Only mine". */
async function setUpForAdmin() {
  if (me.role !== "admin") {
    view.mine = "";
    return;
  }
  columns = ["select", "name", "state", "submitted", "duration", "owner", "result", "actions"];
  byId("mine-field").hidden = false;
  setText(byId("results-intro"), "Everyone's jobs, newest first. This list updates by itself.");
  try {
    const { users } = await getJSON("/api/users");
    ownerEmails = new Map(users.map((user) => [user.id, user.email]));
  } catch (_) {
    // Ids are shown instead of e-mail addresses.
  }
}

async function start() {
  try {
    me = await getMe();
    await setUpForAdmin();
  } catch (_) {
    // Signed out: the API layer goes to the sign-in page.
  }
  drawHeader();
  table.tBodies[0].querySelector("td.empty")?.setAttribute("colspan", String(columns.length));
  wire();
  wireBulk();
  stream = followJobs("/api/events", showJob, {
    onStatus: (open) => {
      showLive();
      if (open) scheduleRefresh(); // catch up on what was missed while the stream was down
    },
  });
  poller = startPolling(refresh, { intervalMs: () => (stream.open ? STREAM_POLL_MS : FALLBACK_POLL_MS) });
  setInterval(() => {
    for (const job of shown.values()) {
      if (job.state === "running") updateJobRow(table.tBodies[0], job, columns, rowContext);
    }
  }, 1000);
}

start();

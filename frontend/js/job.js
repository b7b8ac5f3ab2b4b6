// Job page: state, progress and timings pushed by the server, the log while it grows, the queue
// and the controls, the result's files and their previews.

import "./account-menu.js";
import { ApiError, filesUrl, fileUrl, getJSON, jobUrl, logUrl, request, resultUrl } from "./api.js";
import { byId, el, setBadge, setText, showError } from "./dom.js";
import { formatBytes, formatDuration, formatFullTime, formatRunDuration, formatTime, isFinal, plural, secondsSince }
  from "./format.js";
import { explainRefusal, renderActions, setPriority, wireActions } from "./job-actions.js";
import { followJobs, isStale } from "./live.js";
import { LogView } from "./log-view.js";
import { follow, isFollowed, notifyIfEnded, renderFollowButton, unfollow } from "./notify.js";
import { renderRanWith } from "./ran-with.js";
import { openRerunForm } from "./rerun-form.js";
import { previewCard, previewKind } from "./preview.js";
import { startPolling } from "./poll.js";

const FALLBACK_POLL_MS = 5000; // only while the event stream is down
const QUEUE_POLL_MS = 3000; // the stream does not say when a waiting job moves up
const SAFETY_POLL_MS = 15000; // read the job now and then even while the stream works
const LOG_POLL_MS = 1000;
const AUTO_PREVIEWS = 6;
const LISTED_FILES = 500;

const jobId = new URLSearchParams(window.location.search).get("id");
let job = null;
let historyState = null;
const log = { offset: 0, attempt: null, decoder: new TextDecoder("utf-8") };
const openPreviews = new Map();

// Details

function hasResult(current) {
  return isFinal(current.state) && !current.result_pending && current.result_size !== null && !current.expired_at;
}

/** Final, and nothing more to hear: a cancelled job's kept result may still be on its way. */
function settled(current) {
  return isFinal(current.state) && !current.result_pending;
}

/** "14:05": when a paused job is cancelled unless resumed. */
function clockTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

/** Seconds since the job was last heard of, while its clock runs. */
function sinceSeen(current, now) {
  return current.state === "running" ? Math.max(0, (now - current.fetchedAt) / 1000) : 0;
}

/** Time spent running, pauses left out: the server's figure, moved on by the clock while it runs. */
function activeSeconds(current, now) {
  if (current.elapsed_s === null || current.elapsed_s === undefined) return secondsSince(current.started_at, now);
  return current.elapsed_s + sinceSeen(current, now);
}

function etaSeconds(current, now) {
  if (current.eta_s === null || current.eta_s === undefined) return null;
  return Math.max(0, current.eta_s - sinceSeen(current, now));
}

function hasProgress(current) {
  return current.progress !== null && current.progress !== undefined;
}

/** "42 % · filtering channel 3 · running for 1 min 12 s · about 2 min left" */
export function progressSummary(current, now = Date.now()) {
  const parts = [];
  if (hasProgress(current)) parts.push(`${Math.floor(current.progress * 100)} %`);
  if (current.progress_message) parts.push(current.progress_message);
  const active = formatDuration(activeSeconds(current, now));
  parts.push(current.state === "paused" ? `paused after ${active} (its time limit is not counting)` : `running for ${active}`);
  const eta = etaSeconds(current, now);
  if (current.state === "running" && eta !== null) parts.push(eta < 1 ? "almost done" : `about ${formatDuration(eta)} left`);
  return parts.join(" · ");
}

function progressFact(current) {
  return [["Progress", hasProgress(current) ? `${Math.floor(current.progress * 100)} %` : "—"]];
}

/** The same facts in the same places in every state, so the details never jump. */
function timingFacts(current, now) {
  const paused = current.paused_s || 0;
  let duration;
  if (current.state === "queued") duration = ["Waiting for", formatDuration(secondsSince(current.created_at, now))];
  else if (!current.started_at) duration = ["Ran for", "—"];
  else if (current.finished_at) duration = ["Ran for", formatRunDuration(current.duration_s, paused)];
  else duration = [current.state === "paused" ? "Paused after" : "Running for",
    formatRunDuration(activeSeconds(current, now), paused)];
  return [
    ["Started", current.started_at ? formatFullTime(current.started_at) : "not yet"],
    ["Finished", current.finished_at ? formatFullTime(current.finished_at) : "—"],
    duration, ...progressFact(current),
  ];
}

function environmentFact(current) {
  if (current.env_seconds === null || current.env_seconds === undefined) return "—";
  const how = current.env_cached ? "from the cache" : "built";
  const built = current.env_built_at ? ` (built ${formatFullTime(current.env_built_at)})` : "";
  const fresh = current.fresh_env ? ", newest versions asked for" : "";
  return `${how}, ${formatDuration(current.env_seconds)}${built}${fresh}`;
}

function describeLimits(limits) {
  if (!limits) return "—";
  const parts = [`memory ${limits.memory_mb} MB`, `CPU time ${formatDuration(limits.cpu_s)}`,
    `${limits.processes} processes`, `${limits.open_files} open files`, `files up to ${limits.file_mb} MB`];
  if (limits.cpus) parts.push(`${limits.cpus} CPUs`);
  return parts.join(", ");
}

// A Slurm unit's batch job: "batch job 42 · PENDING (Resources) · on c12".
function executionFact(execution) {
  if (!execution || execution.executor !== "slurm") return null;
  const parts = [execution.slurm_job_id ? `batch job ${execution.slurm_job_id}` : "being submitted"];
  if (execution.slurm_state) parts.push(execution.reason ? `${execution.slurm_state} (${execution.reason})` : execution.slurm_state);
  if (execution.node) parts.push(`on ${execution.node}`);
  return ["Slurm", parts.join(" · ")];
}

function renderFacts(now = Date.now()) {
  if (!job) return;
  const facts = [
    ["Submitted", formatFullTime(job.created_at)],
    ...timingFacts(job, now),
    ["Exit code", job.exit_code ?? "—"],
    ["Attempts", String(job.attempts ?? 0)],
    ["Unit", job.unit || "—"],
    ["Priority", String(job.priority ?? 0)],
    ["Time limit", job.timeout_s ? formatDuration(job.timeout_s) : "server default"],
    ["Limits", describeLimits(job.run_limits)],
    ["Upload", formatBytes(job.upload_size)],
    ["Result", job.result_size === null ? "—" : formatBytes(job.result_size)],
    ["Environment", environmentFact(job)],
  ];
  const slurm = executionFact(job.execution);
  if (slurm) facts.splice(5, 0, slurm);
  if (job.rerun_of) facts.push(["Run again from", job.rerun_of]);
  const list = byId("facts");
  const signature = JSON.stringify(facts);
  if (list.dataset.signature === signature) return;
  list.dataset.signature = signature;
  list.replaceChildren(...facts.map(([term, value]) => el("div", { dataset: { fact: term } },
    el("dt", {}, term), el("dd", {}, term === "Run again from"
      ? el("a", { href: jobUrl(value), class: "mono" }, value) : String(value)))));
}

/** Said to screen readers only when it changes in substance: the state, or ten more per cent. */
function announceProgress(current) {
  const step = hasProgress(current) ? Math.floor(current.progress * 10) * 10 : null;
  const text = `${current.state}${step === null ? "" : `, ${step} %`}`;
  setText(byId("progress-announce"), text);
}

/** Shown from the start of the run to its end and after, so the page below it never moves. */
function renderProgress(now = Date.now()) {
  const card = byId("progress-card");
  card.hidden = !(job && job.state !== "queued" && (job.started_at || !isFinal(job.state)));
  if (card.hidden) return;
  const bar = byId("job-progress");
  const final = isFinal(job.state);
  if (hasProgress(job) || job.state === "succeeded") {
    bar.value = job.state === "succeeded" ? 1 : Math.min(1, Math.max(0, job.progress));
  } else if (final) {
    bar.value = 0;
  } else {
    bar.removeAttribute("value"); // indeterminate: running, amount unknown
  }
  bar.classList.toggle("paused", job.state === "paused");
  setText(byId("progress-text"), final ? finalSummary(job) : progressSummary(job, now));
  byId("progress-hint").hidden = hasProgress(job) || final;
  byId("job-live").hidden = final;
  announceProgress(job);
}

function finalSummary(current) {
  const parts = [current.state];
  if (hasProgress(current)) parts.push(`${Math.floor(current.progress * 100)} %`);
  if (current.duration_s !== null && current.duration_s !== undefined) {
    parts.push(`ran for ${formatRunDuration(current.duration_s, current.paused_s || 0)}`);
  }
  return parts.join(" · ");
}

function queueText(current) {
  if (!current.queue_position) return "Waiting for a free processing unit";
  return current.queue_position === 1 ? "Next to run" : `Number ${current.queue_position} in the queue`;
}

function renderQueue() {
  const card = byId("queue-card");
  card.hidden = !(job && job.state === "queued");
  if (card.hidden) return;
  setText(byId("queue-position"), queueText(job));
  setText(byId("queue-detail"), job.run_next
    ? "· moved to the front with Run next"
    : `· priority ${job.priority ?? 0}`);
  const select = byId("priority-input");
  if (document.activeElement !== select && !select.dataset.dirty) select.value = String(job.priority ?? 0);
}

function headline(current) {
  if (current.state === "queued") return "waiting for a free processing unit";
  const execution = current.execution || {};
  if (current.state === "running" && execution.slurm_state === "PENDING") {
    return `waiting in the cluster's queue${execution.reason ? ` (${execution.reason})` : ""}`;
  }
  if (current.state === "running") return `running on ${current.unit || "a processing unit"}`;
  if (current.state === "paused") {
    const unit = current.unit ? `its unit ${current.unit}` : "its unit";
    return current.pause_deadline
      ? `Paused: it keeps ${unit} and its time limit is not counting; it will be cancelled at ${clockTime(current.pause_deadline)} unless resumed`
      : `Paused: it keeps ${unit} and its time limit is not counting, until resumed or cancelled`;
  }
  const took = current.duration_s === null ? "" : ` after ${formatDuration(current.duration_s)}`;
  return `${current.state}${took}`;
}

/** A failure as an error; a cancel the user asked for as a plain note, one NIAS made (a pause past
 * its limit) as a warning. */
function renderOutcome(current) {
  const errorBox = byId("job-error");
  errorBox.hidden = !current.error;
  if (!current.error) return;
  const cancelled = current.state === "cancelled";
  const asked = cancelled && current.error.startsWith("Cancelled on request");
  errorBox.className = asked ? "notice info" : cancelled ? "notice warn" : "notice error";
  if (asked) errorBox.removeAttribute("role");
  else errorBox.setAttribute("role", "alert");
  setText(byId("job-error-title"), asked ? "Cancelled" : cancelled ? "Cancelled by NIAS"
    : current.state === "failed" ? "The job failed" : "What went wrong");
  setText(byId("job-error-text"), current.error);
}

function renderJob() {
  document.title = `${job.name} · ${job.state} · NIAS`;
  setText(byId("crumb-name"), job.name);
  setText(byId("job-name"), job.name);
  setText(byId("job-id"), job.id);
  setText(byId("job-headline"), headline(job));
  setBadge(byId("job-state"), job.state);
  renderOutcome(job);
  const download = byId("download-result");
  download.hidden = !hasResult(job);
  download.href = resultUrl(job.id);
  // Only a succeeded job's result is the page's main action; a failed or cancelled one's is partial.
  download.classList.toggle("primary", job.state === "succeeded");
  setText(download, job.state === "succeeded" ? "Download result" : "Download the partial result");
  renderActions(job);
  renderProgress();
  renderQueue();
  renderFacts();
  renderRanWith(job);
  renderFollowButton(byId("follow-job"), job);
  notifyIfEnded(job);
}

// Log

let logView = null;

function restartLogIfNewAttempt() {
  if (log.attempt === job.attempts) return;
  const earlier = log.attempt !== null && log.offset > 0;
  log.attempt = job.attempts;
  log.offset = 0;
  log.decoder = new TextDecoder("utf-8");
  logView.reset(earlier ? `--- attempt ${job.attempts} ---` : null);
}

async function refreshLog() {
  if (!job || !job.attempts) return true;
  restartLogIfNewAttempt();
  const final = settled(job); // a cancelled job's unit still writes its last lines while it saves the result
  const response = await request(`${logUrl(job.id)}?offset=${log.offset}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const size = parseInt(response.headers.get("X-Log-Size"), 10);
  log.offset = Number.isFinite(size) ? size : log.offset + bytes.length;
  const text = log.decoder.decode(bytes, { stream: !final });
  if (text || final) logView.append(text, { final });
  const pre = byId("log");
  pre.dataset.reads = String(Number(pre.dataset.reads || 0) + 1);
  return !final; // one last read once the job has ended, then stop
}

// Result and previews

function togglePreview(file, { focus = true } = {}) {
  if (openPreviews.has(file.name)) {
    const card = openPreviews.get(file.name);
    if (focus) card.focus();
    return;
  }
  const card = previewCard(job.id, file, { onClose: () => closePreview(file.name) });
  openPreviews.set(file.name, card);
  byId("previews").append(card);
  byId("preview-section").hidden = false;
  if (focus) {
    card.scrollIntoView({ block: "start" });
    card.focus({ preventScroll: true });
  }
}

function closePreview(name) {
  const card = openPreviews.get(name);
  openPreviews.delete(name);
  if (card) card.remove();
  byId("preview-section").hidden = openPreviews.size === 0;
  const button = document.querySelector(`button[data-preview="${CSS.escape(name)}"]`);
  if (button) button.focus();
}

function fileRow(file) {
  const kind = previewKind(file);
  return el("tr", { dataset: { file: file.name } },
    el("td", { class: "primary mono", dataset: { label: "File" } }, file.name),
    el("td", { dataset: { label: "Type" } }, file.type),
    el("td", { class: "num", dataset: { label: "Size" } }, formatBytes(file.size)),
    el("td", { class: "num", dataset: { label: "" } }, el("div", { class: "button-row" },
      kind ? el("button", { type: "button", class: "small", dataset: { preview: file.name },
        onclick: () => togglePreview(file), "aria-label": `Preview ${file.name}` }, "Preview") : null,
      el("a", { class: "button small", href: fileUrl(job.id, file.name, { download: 1 }), download: "",
        "aria-label": `Download ${file.name}` }, "Download"))));
}

function renderFiles(files) {
  const total = files.reduce((sum, file) => sum + file.size, 0);
  setText(byId("result-summary"), `${plural(files.length, "file")}, ${formatBytes(total)} unpacked`);
  const body = byId("result-body");
  if (!files.length) {
    body.replaceChildren(el("p", { class: "muted" }, "output/ was empty: the result zip holds no files."));
    return;
  }
  const parts = [
    el("div", { class: "table-wrap" }, el("table", { class: "stack", id: "files-table" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "File"), el("th", { scope: "col" }, "Type"),
        el("th", { scope: "col", class: "num" }, "Size"), el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")))),
      el("tbody", {}, files.slice(0, LISTED_FILES).map(fileRow)))),
    files.length > LISTED_FILES
      ? el("p", { class: "muted small" }, `The first ${LISTED_FILES} files are listed; download the result for all ${files.length}.`)
      : null,
    el("div", { class: "form-actions" },
      el("a", { class: "button", href: resultUrl(job.id), download: "" }, `Download all (${formatBytes(job.result_size)} zip)`))
  ];
  body.replaceChildren(...parts.filter(Boolean));
  files.filter((file) => previewKind(file)).slice(0, AUTO_PREVIEWS)
    .forEach((file) => togglePreview(file, { focus: false }));
}

async function loadResult() {
  const body = byId("result-body");
  if (job.expired_at) {
    body.replaceChildren(el("p", { class: "muted" },
      `The result was removed after the retention period, on ${formatTime(job.expired_at)}. The log and details stay.`));
    return;
  }
  if (job.result_pending) {
    setText(byId("result-summary"), "");
    body.replaceChildren(el("p", { class: "muted", id: "result-pending" },
      "The job was stopped; what it wrote to output/ so far is being saved as its result…"));
    return;
  }
  if (job.result_size === null) {
    setText(byId("result-summary"), "");
    body.replaceChildren(el("p", { class: "muted" }, `This job ended without a result${job.error ? "; see the error above" : ""}.`));
    return;
  }
  try {
    renderFiles((await getJSON(filesUrl(job.id))).files);
  } catch (error) {
    body.replaceChildren(el("p", { class: "muted" }, `The result's files cannot be listed: ${error.message}`));
  }
}

// History

/** A reason's first line, with the rest (a traceback) folded under it. */
function reasonNode(reason) {
  const lines = reason.trim().split("\n");
  const last = lines[lines.length - 1];
  if (lines.length === 1) return el("span", { class: "muted small reason" }, reason);
  const raised = [...lines].reverse().find((line) => /^[\w.]+(Error|Exception|Interrupt|Exit)\b/.test(line.trim()));
  const headline = raised ? `${lines[0].replace(/\.$/, "")}: ${raised.trim()}` : lines[0] || last;
  return el("details", { class: "reason small" }, el("summary", {}, headline),
    el("pre", { class: "mono" }, reason));
}

async function refreshHistory() {
  if (historyState === job.state) return;
  historyState = job.state;
  const { transitions } = await getJSON(`/api/jobs/${encodeURIComponent(job.id)}/history`);
  byId("history").replaceChildren(...transitions.map((step) => el("li", {},
    el("time", { class: "nowrap", datetime: step.at, title: formatFullTime(step.at) }, formatTime(step.at)),
    el("span", {}, step.from ? `${step.from} → ` : "", el("strong", {}, step.to)),
    step.attempt ? el("span", { class: "muted small" }, `attempt ${step.attempt}`) : null,
    step.unit ? el("span", { class: "muted small" }, step.unit) : null,
    step.reason ? reasonNode(step.reason) : null)));
}

// Wiring

function showPageError(title, message) {
  const box = byId("page-error");
  box.replaceChildren(el("strong", {}, title), el("span", {}, message), " ",
    el("a", { href: "/results.html" }, "Back to the results"));
  box.hidden = false;
}

let stream = null;
let jobPoller = null;
let logPoller = null;

function showLive(open) {
  for (const id of ["job-live", "queue-live"]) {
    const live = byId(id);
    live.className = open ? "live" : "live stale";
    live.lastChild.textContent = open ? "Live" : `Reconnecting; checking every ${FALLBACK_POLL_MS / 1000} s`;
  }
}

/** Show the job as the server last described it (an event, a GET or an action's answer). */
function applyJob(fresh) {
  const previous = job;
  const next = { ...fresh, fetchedAt: Date.now() };
  // Events carry no queue position: keep the last one known until the next GET brings it.
  const positionMissing = next.state === "queued" && next.queue_position == null;
  if (positionMissing && previous && previous.state === "queued") next.queue_position = previous.queue_position;
  job = next;
  byId("job-view").hidden = false;
  byId("page-error").hidden = true;
  renderJob();
  refreshHistory().catch(() => { historyState = null; });
  if (logPoller && previous && previous.state !== job.state) logPoller.now();
  if (isFinal(job.state)) {
    if (!previous || !settled(previous)) loadResult();
    if (stream && settled(job)) stream.close();
  } else if (positionMissing && jobPoller) {
    jobPoller.now();
  }
}

let lastFetch = 0;

async function fetchJob() {
  lastFetch = Date.now();
  const fresh = await getJSON(`/api/jobs/${encodeURIComponent(jobId)}`);
  if (!isStale(job, fresh)) applyJob(fresh);
}

/** The fallback poll: rare while the stream works (a safety net), except for a waiting job's place. */
async function pollJob() {
  if (job && settled(job)) return false;
  const recent = Date.now() - lastFetch < SAFETY_POLL_MS;
  if (job && stream && stream.open && job.state !== "queued" && recent) return true;
  try {
    await fetchJob();
  } catch (error) {
    showPageError("This page is not updating", error.message);
    throw error;
  }
  return !settled(job);
}

function pollInterval() {
  if (!stream || !stream.open) return FALLBACK_POLL_MS;
  return job && job.state === "queued" ? QUEUE_POLL_MS : FALLBACK_POLL_MS;
}

function wirePriority() {
  const form = byId("priority-form");
  const select = byId("priority-input");
  select.addEventListener("change", () => { select.dataset.dirty = "1"; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = byId("set-priority");
    button.disabled = true;
    showError(byId("action-error"), null);
    try {
      delete select.dataset.dirty;
      applyJob(await setPriority(job, Number(select.value)));
    } catch (error) {
      showError(byId("action-error"), explainRefusal(error), "The priority was not changed");
      fetchJob().catch(() => {});
    } finally {
      button.disabled = false;
    }
  });
}

function followJob() {
  stream = followJobs(`/api/events?job=${encodeURIComponent(jobId)}`, (fresh) => {
    if (fresh.id === jobId && !isStale(job, fresh)) applyJob(fresh);
  }, {
    onStatus: (open) => {
      showLive(open);
      // Back online: catch up on anything said while the stream was down.
      if (open && jobPoller) fetchJob().catch(() => {});
      if (!open && jobPoller) jobPoller.now();
    },
  });
}

async function start() {
  if (!jobId) {
    showPageError("No job chosen", "This page shows one job; open it from the results.");
    return;
  }
  byId("download-log").href = `${logUrl(jobId)}?download=1`;
  logView = new LogView({
    setup: byId("log-setup"), setupCount: byId("log-setup-count"), lines: byId("log"), follow: byId("follow-log"),
    times: byId("log-times"), search: byId("log-search"), searchCount: byId("log-search-count"),
    searchNext: byId("log-search-next"), note: byId("log-note"),
  });
  showLive(false);
  try {
    await fetchJob();
  } catch (error) {
    const missing = error instanceof ApiError && error.status === 404;
    showPageError(missing ? "No such job" : "The job cannot be loaded", error.message);
    if (missing) return;
  }
  if (!job || !settled(job)) {
    followJob();
    jobPoller = startPolling(pollJob, { intervalMs: pollInterval });
  }
  logPoller = startPolling(refreshLog, { intervalMs: LOG_POLL_MS });
  wireActions(() => job, (answer) => {
    // The answer may be older than what the stream said meanwhile (a cancel's kept result, recorded
    // before the answer arrived): never step back to it.
    if (answer && !isStale(job, answer)) applyJob(answer);
    else if (!answer) fetchJob().catch(() => {});
    logPoller.now();
  }, openRerunForm);
  wirePriority();
  byId("follow-job").addEventListener("click", async () => {
    if (isFollowed(job.id)) unfollow(job.id);
    else await follow(job.id);
    renderFollowButton(byId("follow-job"), job);
  });
  if (new URLSearchParams(window.location.search).get("rerun") === "1" && job && isFinal(job.state)) openRerunForm(job);
  setInterval(() => {
    renderFacts();
    if (job) renderProgress();
  }, 1000);
}

start();

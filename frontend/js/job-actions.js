// What may be done to a job in each state, and doing it. The job page and the result rows share
// this one table; the server answers 409 with the allowed targets when a job moved on meanwhile.

import { ApiError, jobUrl, sendJSON } from "./api.js";
import { byId, el, showError } from "./dom.js";
import { isFinal } from "./format.js";

const jobPath = (job, tail) => `/api/jobs/${encodeURIComponent(job.id)}/${tail}`;
const setState = (job, state) => sendJSON(jobPath(job, "state"), "PUT", { state });

/** Every control, in the order shown; `perform` answers the changed job (or the new one, for rerun). */
export const JOB_ACTIONS = [
  { key: "pause", label: "Pause", allowed: (job) => job.state === "running", perform: (job) => setState(job, "paused") },
  { key: "resume", label: "Resume", allowed: (job) => job.state === "paused", perform: (job) => setState(job, "running") },
  {
    key: "run-next",
    label: "Run next",
    allowed: (job) => job.state === "queued" && !job.run_next,
    perform: (job) => sendJSON(jobPath(job, "run-next"), "POST"),
  },
  {
    key: "cancel",
    label: "Cancel",
    allowed: (job) => !isFinal(job.state),
    confirm: (job) => `Cancel "${job.name}"? A running job is stopped; what it wrote to output/ is kept.`,
    perform: (job) => setState(job, "cancelled"),
  },
  {
    key: "rerun",
    label: "Run again",
    allowed: (job) => isFinal(job.state) && !job.expired_at,
    perform: (job) => sendJSON(jobPath(job, "rerun"), "POST"),
    makesNewJob: true,
  },
];

export function allowedActions(job) {
  return JOB_ACTIONS.filter((action) => action.allowed(job));
}

export function setPriority(job, priority) {
  return sendJSON(jobPath(job, "priority"), "PUT", { priority });
}

/** A refused transition explained: the job's state now and what it allows. */
export function explainRefusal(error) {
  if (!(error instanceof ApiError) || error.status !== 409 || !error.details.state) return error;
  const allowed = error.details.allowed || [];
  const what = allowed.length ? `it can now only be ${allowed.join(" or ")}` : "nothing more can be done to it";
  return new Error(`The job is ${error.details.state} by now, so ${what}.`);
}

/** Ask, act, report: `onDone(answer, action)` gets the server's job; errors go to `errorBox`. */
export async function runAction(action, job, { button, errorBox, onDone }) {
  if (action.confirm && !window.confirm(action.confirm(job))) return;
  showError(errorBox, null);
  if (button) button.disabled = true;
  try {
    onDone(await action.perform(job), action);
  } catch (error) {
    showError(errorBox, explainRefusal(error), `${action.label} did not work`);
    if (error instanceof ApiError && error.status === 409) onDone(null, action);
  } finally {
    if (button) button.disabled = false;
  }
}

/** Small buttons for a table row: only the actions the job's state allows. */
export function actionButtons(job, { errorBox, onDone }) {
  return el("div", { class: "button-row row-actions" }, allowedActions(job).map((action) => {
    const button = el("button", {
      type: "button", class: "small", dataset: { action: action.key },
      "aria-label": `${action.label} ${job.name}`,
    }, action.label);
    button.addEventListener("click", () => runAction(action, job, { button, errorBox, onDone }));
    return button;
  }));
}

// The job page's header buttons (`#action-<key>`)

export function renderActions(job) {
  for (const action of JOB_ACTIONS) byId(`action-${action.key}`).hidden = !action.allowed(job);
}

/** `currentJob()` is the job as last seen; `apply(job)` shows a changed job (null: reload it). */
export function wireActions(currentJob, apply) {
  for (const action of JOB_ACTIONS) {
    const button = byId(`action-${action.key}`);
    button.addEventListener("click", () => runAction(action, currentJob(), {
      button,
      errorBox: byId("action-error"),
      onDone: (answer) => {
        if (answer && action.makesNewJob) window.location.assign(jobUrl(answer.id));
        else apply(answer);
      },
    }));
  }
}

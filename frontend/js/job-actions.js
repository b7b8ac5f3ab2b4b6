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
    formUrl: (job) => `${jobUrl(job.id)}&rerun=1`, // rows open the job page's "Run again" form
  },
  {
    key: "rerun-exact",
    label: "Re-run exactly",
    allowed: (job) => isFinal(job.state) && !job.expired_at && Boolean(job.ran_with && job.ran_with.packages.length),
    perform: (job) => sendJSON(jobPath(job, "rerun"), "POST", { exact: true }),
    makesNewJob: true,
    pageOnly: true, // beside "Run again" on the job page; rows keep their few controls
  },
];

export function allowedActions(job, { page = false } = {}) {
  return JOB_ACTIONS.filter((action) => (page || !action.pageOnly) && action.allowed(job));
}

export const PRIORITIES = Array.from({ length: 10 }, (_, priority) => priority); // 0 to 9, higher runs first
export const canSetPriority = (job) => job.state === "queued";

export function setPriority(job, priority) {
  return sendJSON(jobPath(job, "priority"), "PUT", { priority });
}

/** Giving a queued job a new priority, as an action `runAction` can do. */
export function priorityAction(priority) {
  return {
    key: "set-priority",
    label: "Set priority",
    allowed: canSetPriority,
    perform: (job) => setPriority(job, priority),
  };
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

/** A queued job's priority in a table row: pick one, then "Set" sends it. */
function rowPriority(job, { errorBox, onDone }) {
  const current = String(job.priority ?? 0);
  const select = el("select", {
    class: "small", dataset: { action: "priority" }, "aria-label": `Priority of ${job.name}`,
    title: "Priority: higher runs first; equal priorities in the order queued",
  }, PRIORITIES.map((priority) => el("option", { value: String(priority), selected: String(priority) === current },
    String(priority))));
  const button = el("button", {
    type: "submit", class: "small", dataset: { action: "set-priority" }, disabled: true,
    "aria-label": `Set priority of ${job.name}`,
  }, "Set");
  select.addEventListener("change", () => { button.disabled = select.value === current; });
  const form = el("form", { class: "row-priority" },
    el("span", { class: "small muted", "aria-hidden": "true" }, "Priority"), select, button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (select.value === current) return;
    runAction(priorityAction(Number(select.value)), job, { button, errorBox, onDone });
  });
  return form;
}

/** What a row's controls depend on, so the row is redrawn only when they change. */
export function actionsSignature(job) {
  const priority = canSetPriority(job) ? job.priority ?? 0 : "";
  return `${job.id}|${allowedActions(job).map((action) => action.key).join(",")}|${priority}`;
}

/** Small controls for a table row: only the actions the job's state allows. */
export function actionButtons(job, { errorBox, onDone }) {
  const buttons = allowedActions(job).map((action) => {
    if (action.formUrl) {
      return el("a", { class: "button small", href: action.formUrl(job), dataset: { action: action.key },
        "aria-label": `${action.label} ${job.name}…` }, action.label);
    }
    const button = el("button", {
      type: "button", class: "small", dataset: { action: action.key },
      "aria-label": `${action.label} ${job.name}`,
    }, action.label);
    button.addEventListener("click", () => runAction(action, job, { button, errorBox, onDone }));
    return button;
  });
  const priority = canSetPriority(job) ? rowPriority(job, { errorBox, onDone }) : null;
  return el("div", { class: "button-row row-actions" }, priority, buttons);
}

// The job page's header buttons (`#action-<key>`)

export function renderActions(job) {
  for (const action of JOB_ACTIONS) byId(`action-${action.key}`).hidden = !action.allowed(job);
}

/** `currentJob()` is the job as last seen; `apply(job)` shows a changed job (null: reload it);
 * `openForm(job)` opens the form of an action that has one ("Run again"). */
export function wireActions(currentJob, apply, openForm) {
  for (const action of JOB_ACTIONS) {
    const button = byId(`action-${action.key}`);
    if (action.formUrl && openForm) {
      button.addEventListener("click", () => openForm(currentJob()));
      continue;
    }
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

// "Run again": a small form prefilled from the original job (name "… (run 2)", priority, time
// limit and resource limits); the new job is queued with what the form says.

import { ApiError, jobUrl, sendJSON } from "./api.js";
import { byId, el, showError } from "./dom.js";

const LIMITS = [
  ["memory_mb", "Memory (MB)"], ["cpu_s", "CPU time (s)"], ["processes", "Processes"],
  ["open_files", "Open files"], ["file_mb", "File size (MB)"],
];

/** "filter run (run 2)" -> "filter run (run 3)"; any other name gets " (run 2)". */
export function nextRunName(name) {
  const match = /^(.*) \(run (\d+)\)$/.exec(name);
  return match ? `${match[1]} (run ${Number(match[2]) + 1})` : `${name} (run 2)`;
}

function numberField(id, label, value, max) {
  return el("div", { class: "field", dataset: { field: id } },
    el("label", { for: `rerun-${id}` }, label),
    el("input", { id: `rerun-${id}`, name: id, type: "number", min: "1", max: max ? String(max) : null, step: "1",
      value: value ?? "", inputmode: "numeric", "aria-describedby": `rerun-${id}-error` }),
    el("span", { class: "field-error", id: `rerun-${id}-error` }));
}

function buildForm(job) {
  const limits = job.run_limits || {};
  const asked = job.limits || {};
  return [
    el("div", { class: "field", dataset: { field: "name" } },
      el("label", { for: "rerun-name" }, "Name"),
      el("input", { id: "rerun-name", name: "name", value: nextRunName(job.name), maxlength: "200", required: true,
        "aria-describedby": "rerun-name-error" }),
      el("span", { class: "field-error", id: "rerun-name-error" })),
    el("div", { class: "field", dataset: { field: "priority" } },
      el("label", { for: "rerun-priority" }, "Priority (0–9, higher runs first)"),
      el("input", { id: "rerun-priority", name: "priority", type: "number", min: "0", max: "9", step: "1",
        value: String(job.priority ?? 0), "aria-describedby": "rerun-priority-error" }),
      el("span", { class: "field-error", id: "rerun-priority-error" })),
    numberField("timeout_s", "Time limit (s)", job.timeout_s ?? limits.timeout_s, null),
    el("fieldset", { class: "limits" }, el("legend", {}, "Limits (at most this server's)"),
      LIMITS.map(([key, label]) => numberField(key, label, asked[key] ?? limits[key], null))),
  ];
}

/** What the new job asks for: the name and priority, and the limits the original asked for or the
 * form changed (an unchanged server default stays the server's, not a limit of the job's own). */
function readForm(form, job) {
  const value = (name) => form.elements[name].value.trim();
  const number = (name) => (value(name) === "" ? null : Number(value(name)));
  const changed = (name) => form.elements[name].value !== form.elements[name].defaultValue;
  const limits = { ...(job.limits || {}) };
  for (const [key] of LIMITS) if (changed(key)) limits[key] = number(key);
  const body = { name: value("name"), priority: number("priority"), limits };
  if (job.timeout_s || changed("timeout_s")) body.timeout_s = number("timeout_s");
  return body;
}

/** Mark every field the server named as bad, with its reason beside it. */
function markFields(form, fields) {
  for (const node of form.querySelectorAll("[data-field]")) {
    const why = fields[node.dataset.field];
    const input = node.querySelector("input");
    input.toggleAttribute("aria-invalid", Boolean(why));
    if (why) input.setAttribute("aria-invalid", "true");
    node.querySelector(".field-error").textContent = why ? `${node.querySelector("label").textContent}: ${why}` : "";
  }
  const first = form.querySelector("[aria-invalid=true]");
  if (first) first.focus();
}

export function openRerunForm(job) {
  const dialog = byId("rerun-dialog");
  const form = byId("rerun-form");
  byId("rerun-fields").replaceChildren(...buildForm(job));
  showError(byId("rerun-error"), null);
  form.onsubmit = async (event) => {
    event.preventDefault();
    if (event.submitter && event.submitter.value === "cancel") { dialog.close(); return; }
    const submit = byId("rerun-submit");
    submit.disabled = true;
    markFields(form, {});
    try {
      const created = await sendJSON(`/api/jobs/${encodeURIComponent(job.id)}/rerun`, "POST", readForm(form, job));
      window.location.assign(jobUrl(created.id));
    } catch (error) {
      const fields = error instanceof ApiError ? error.details.fields || {} : {};
      markFields(form, fields);
      showError(byId("rerun-error"), error, "The job was not queued");
    } finally {
      submit.disabled = false;
    }
  };
  dialog.showModal();
  byId("rerun-name").select();
}

// Job tables that update in place: rows keyed by job id, cells rewritten only when they change,
// so a poll never steals the keyboard focus or flickers.

import { jobUrl, resultUrl } from "./api.js";
import { badge, el } from "./dom.js";
import { formatAgo, formatBytes, formatDuration, formatFullTime, isFinal } from "./format.js";
import { actionButtons, actionsSignature } from "./job-actions.js";

const hasProgress = (job) => job.progress !== null && job.progress !== undefined
  && (job.state === "running" || job.state === "paused");

/** A running job's duration moved on by the clock since it was last heard of (`fetchedAt`). */
function liveDuration(job) {
  if (job.state !== "running" || !job.fetchedAt || job.duration_s === null || job.duration_s === undefined) {
    return job.duration_s;
  }
  return job.duration_s + Math.max(0, (Date.now() - job.fetchedAt) / 1000);
}

function smallProgress(job) {
  const percent = Math.floor(job.progress * 100);
  const label = `${percent} %${job.progress_message ? ` · ${job.progress_message}` : ""}`;
  return el("div", { class: "row-progress", title: label },
    el("progress", { max: "1", value: String(Math.min(1, Math.max(0, job.progress))), "aria-label": `Progress of ${job.name}` }),
    el("span", { class: "small muted" }, `${percent} %`));
}

/** Where a job stands beyond its state: its place and priority in the queue, or its unit. */
export function standing(job) {
  if (job.state === "queued") {
    const parts = [];
    if (job.queue_position === 1) parts.push(el("span", { class: "next-up" }, "next up"));
    else if (job.queue_position) parts.push(`#${job.queue_position} in queue`);
    parts.push(`priority ${job.priority ?? 0}${job.run_next ? " · run next" : ""}`);
    return el("div", { class: "standing small muted" }, ...parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
  }
  if (job.state === "paused" && job.unit) return el("div", { class: "standing small muted" }, `holds ${job.unit}`);
  if (job.state === "running" && job.unit) return el("div", { class: "standing small muted" }, `on ${job.unit}`);
  return null;
}

export const COLUMNS = {
  select: {
    label: "Select",
    hiddenLabel: true,
    signature: (job, context) => `${job.id}|${context.selected ? context.selected.has(job.id) : ""}`,
    render: (job, context) => el("input", {
      type: "checkbox", class: "select-job", dataset: { action: "select" }, "aria-label": `Select ${job.name}`,
      checked: Boolean(context.selected && context.selected.has(job.id)),
      onchange: (event) => context.onSelect && context.onSelect(job, event.target.checked),
    }),
  },
  name: {
    label: "Name",
    primary: true,
    sort: "name",
    signature: (job) => `${job.name}|${job.note || ""}`,
    render: (job) => [
      el("a", { class: "job-name", href: jobUrl(job.id) }, job.name),
      job.note ? el("span", { class: "tag", title: "Your note" }, job.note) : null,
      el("div", { class: "job-id" }, job.id),
    ],
  },
  state: {
    label: "State",
    sort: "state",
    signature: (job) => `${job.state}|${hasProgress(job) ? Math.floor(job.progress * 100) : ""}|${job.progress_message || ""}`
      + `|${job.queue_position}|${job.priority}|${job.run_next}|${job.unit}`,
    render: (job) => el("div", { class: "state-cell" }, badge(job.state), hasProgress(job) ? smallProgress(job) : null,
      standing(job)),
  },
  owner: {
    label: "Owner",
    signature: (job, context) => (context.ownerName ? context.ownerName(job.owner) : job.owner) || "",
    render: (job, context) => {
      const name = context.ownerName ? context.ownerName(job.owner) : job.owner;
      if (!name) return el("span", { class: "muted" }, "—");
      // An address may wrap after its "@", never inside a word.
      const at = name.indexOf("@") + 1;
      const parts = at > 0 ? [name.slice(0, at), el("wbr"), name.slice(at)] : [name];
      return el("span", { class: "owner", title: job.owner || "" }, parts);
    },
  },
  actions: {
    label: "Actions",
    hiddenLabel: true,
    className: "num",
    signature: actionsSignature,
    render: (job, context) => actionButtons(job, context.actions),
  },
  submitted: {
    label: "Submitted",
    sort: "submitted",
    signature: (job) => `${job.created_at}|${formatAgo(job.created_at)}`,
    render: (job) => el("time", { datetime: job.created_at, title: formatFullTime(job.created_at), class: "nowrap" },
      formatAgo(job.created_at)),
  },
  duration: {
    label: "Duration",
    className: "num",
    sort: "duration",
    title: "Time spent running; paused time is left out",
    signature: (job) => formatDuration(liveDuration(job)),
    render: (job) => formatDuration(liveDuration(job)),
  },
  unit: {
    label: "Unit",
    sort: "unit",
    signature: (job) => job.unit || "",
    render: (job) => job.unit || el("span", { class: "muted" }, "—"),
  },
  result: {
    label: "Result",
    signature: (job) => `${job.state}|${job.result_pending}|${job.result_size}|${job.expired_at}`,
    render: (job) => {
      if (!isFinal(job.state)) return el("span", { class: "muted" }, "not yet");
      if (job.expired_at) return el("span", { class: "muted", title: `removed ${formatFullTime(job.expired_at)}` }, "expired");
      if (job.result_pending) return el("span", { class: "muted" }, "being saved");
      if (job.result_size === null || job.result_size === undefined) return el("span", { class: "muted" }, "none");
      return el("a", {
        class: "button small",
        href: resultUrl(job.id),
        download: "",
        "aria-label": `Download the result of ${job.name}`,
        title: `Download the result (${formatBytes(job.result_size)})`,
      }, "Download");
    },
  },
};

/** The header; with `sorting` ({sort, order, onSort, header(th, name)}), sortable columns are buttons. */
export function headerRow(columnNames, sorting = null) {
  return el("tr", {}, columnNames.map((name) => {
    const column = COLUMNS[name];
    const label = column.hiddenLabel ? el("span", { class: "visually-hidden" }, column.label) : column.label;
    const th = el("th", { scope: "col", class: [column.className, `col-${name}`].filter(Boolean).join(" "),
      title: column.title || null });
    if (sorting && column.sort) {
      const active = sorting.sort === column.sort;
      th.setAttribute("aria-sort", active ? (sorting.order === "asc" ? "ascending" : "descending") : "none");
      th.append(el("button", { type: "button", class: "sort", dataset: { sort: column.sort },
        onclick: () => sorting.onSort(column.sort) }, label,
      el("span", { class: "sort-mark", "aria-hidden": "true" }, active ? (sorting.order === "asc" ? " ▲" : " ▼") : "")));
    } else {
      th.append(label);
    }
    if (sorting && sorting.header) sorting.header(th, name);
    return th;
  }));
}

function updateCell(cell, column, job, context) {
  const signature = column.signature(job, context);
  if (cell.dataset.signature === signature) return;
  cell.dataset.signature = signature;
  const hadFocus = cell.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  cell.replaceChildren(...[column.render(job, context)].flat().filter((node) => node !== null && node !== undefined));
  // A row redrawn under the keyboard keeps the focus on the same control when it is still there,
  // else on the row's first control that is (Pause becomes Resume, Set is disabled once sent).
  if (!hadFocus) return;
  const again = cell.querySelector(`[data-action="${hadFocus}"]:not(:disabled)`)
    || cell.querySelector("[data-action]:not(:disabled)");
  if (again) again.focus();
}

function newRow(job, columnNames) {
  const row = el("tr", { dataset: { jobId: job.id } });
  for (const name of columnNames) {
    const column = COLUMNS[name];
    const classes = [column.className, column.primary ? "primary" : null, `col-${name}`].filter(Boolean).join(" ");
    row.append(el("td", { class: classes, dataset: { label: column.hiddenLabel ? "" : column.label } }));
  }
  return row;
}

/** Redraw one job's row where it is; false when the job has no row in `tbody`. */
export function updateJobRow(tbody, job, columnNames, context = {}) {
  const row = tbody.querySelector(`tr[data-job-id="${CSS.escape(job.id)}"]`);
  if (!row) return false;
  columnNames.forEach((name, index) => updateCell(row.cells[index], COLUMNS[name], job, context));
  row.dataset.state = job.state;
  return true;
}

/** Show `jobs` in `tbody` in this order, reusing the rows already there; `context` is handed to
 * the columns that need it (`ownerName(id)`, `actions: {errorBox, onDone}`). */
export function renderJobRows(tbody, jobs, columnNames, emptyMessage, context = {}) {
  if (!jobs.length) {
    const message = [emptyMessage].flat();
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: columnNames.length, class: "empty" }, ...message)));
    return;
  }
  const existing = new Map([...tbody.querySelectorAll("tr[data-job-id]")].map((row) => [row.dataset.jobId, row]));
  const rows = jobs.map((job) => {
    const row = existing.get(job.id) || newRow(job, columnNames);
    existing.delete(job.id);
    columnNames.forEach((name, index) => updateCell(row.cells[index], COLUMNS[name], job, context));
    row.dataset.state = job.state;
    return row;
  });
  for (const stale of existing.values()) stale.remove();
  tbody.querySelectorAll("tr:not([data-job-id])").forEach((row) => row.remove());
  const inOrder = rows.every((row, index) => tbody.children[index] === row);
  if (!inOrder) rows.forEach((row) => tbody.append(row));
}

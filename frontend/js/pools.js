// Pools of processing units: the Upload page's pool choice, the units of each pool on Home,
// and the Admin page's table of units with what each says it has.

import { getJSON, sendJSON } from "./api.js";
import { byId, el, setText, showError } from "./dom.js";
import { formatAgo, plural } from "./format.js";

/** Fill the Upload page's pool choice with the pools that have a unit online (the default pool first). */
export async function fillPoolChoice(select) {
  let pools;
  try {
    ({ pools } = await getJSON("/api/summary"));
  } catch {
    return; // the field keeps its one "default" choice; the server says if a pool is wrong
  }
  if (!pools) return;
  const usable = pools.filter((pool) => pool.declared && (pool.online > 0 || pool.name === "default"));
  select.replaceChildren(...usable.map((pool) => el("option", { value: pool.name },
    `${pool.name} (${pool.online ? plural(pool.online, "unit") + " online" : "no unit online"})`)));
  byId("pool-field").hidden = usable.length < 2;
}

/** Home: one line per pool, with its units and queued jobs. */
export function renderPools(list, pools) {
  if (!pools || pools.length < 2) {
    list.hidden = true;
    return;
  }
  list.hidden = false;
  list.replaceChildren(...pools.map((pool) => el("li", { dataset: { pool: pool.name } },
    el("strong", {}, `Pool ${pool.name}`), " ",
    el("span", { class: "muted small" },
      `${pool.units.length ? pool.units.join(", ") : "no unit"} · ${plural(pool.queued, "job")} queued`))));
}

function describeMemory(mb) {
  if (mb === null || mb === undefined) return "–";
  return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GB` : `${mb} MB`;
}

/** Admin: every unit with its host, CPUs, memory, GPUs, Python and pools. */
export async function showUnitsTable() {
  const body = byId("units-table").querySelector("tbody");
  const { units } = await getJSON("/api/units");
  setText(byId("units-count"), plural(units.length, "unit"));
  if (!units.length) {
    body.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: 9 }, "No processing unit has reported yet.")));
    return;
  }
  body.replaceChildren(...units.map((unit) => el("tr", { dataset: { unit: unit.name } },
    el("td", { dataset: { label: "Unit" } }, el("strong", {}, unit.name)),
    el("td", { dataset: { label: "State" } }, unit.state === "offline" ? `offline, seen ${formatAgo(unit.last_seen)}` : unit.state,
      unit.drain ? el("span", { class: "badge paused unit-drain" }, unit.drain) : null),
    el("td", { dataset: { label: "Pools" } }, (unit.pools || []).join(", ")),
    el("td", { dataset: { label: "Host" } }, unit.executor === "slurm"
      ? `${unit.host || "–"} (Slurm login node${unit.pause_refusal ? "; cannot pause jobs" : ""})` : unit.host || "–"),
    el("td", { dataset: { label: "CPUs" }, class: "num" }, unit.cpus === null ? "–" : String(unit.cpus)),
    el("td", { dataset: { label: "Memory" }, class: "num" }, describeMemory(unit.memory_mb)),
    el("td", { dataset: { label: "GPUs" } }, unit.gpus && unit.gpus.length ? unit.gpus.join(", ") : "none"),
    el("td", { dataset: { label: "Python" } }, unit.python || "–"),
    el("td", { dataset: { label: "" }, class: "num" }, drainButton(unit)))));
}

/** Drain a unit (it finishes its job and takes no more), or bring a drained one back. */
function drainButton(unit) {
  const drain = !unit.drain;
  const button = el("button", { type: "button", class: "small", dataset: { action: drain ? "drain" : "undrain" },
    "aria-label": `${drain ? "Drain" : "Bring back"} ${unit.name}` }, drain ? "Drain" : "Bring back");
  button.addEventListener("click", async () => {
    if (drain && !window.confirm(`Drain ${unit.name}? It finishes its current job, then takes no more until brought back.`)) return;
    button.disabled = true;
    try {
      await sendJSON(`/api/admin/units/${encodeURIComponent(unit.name)}/drain`, "PUT", { drain });
      await showUnitsTable();
    } catch (error) {
      button.disabled = false;
      showError(byId("units-error"), error, `${drain ? "Draining" : "Bringing back"} ${unit.name} did not work`);
    }
  });
  return button;
}

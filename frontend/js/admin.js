// Admin page: users (listed, created, signed out), invitations, everyone's jobs, the dead-letter queue,
// and a warning while a processing unit runs jobs without a sandbox.

import "./account-menu.js";
import { getJSON, getMe, sendJSON } from "./api.js";
import { createInvitation } from "./invitations.js";
import { byId, copyButton, el, showError, setText } from "./dom.js";
import { formatAgo, formatBytes, formatFullTime, plural } from "./format.js";
import { startPolling } from "./poll.js";
import { showUnitsTable } from "./pools.js";
import { accountButtons, roleControl } from "./user-actions.js";

const UNITS_EVERY_MS = 10000; // units announce themselves every 5 s

function timeCell(iso, label) {
  return el("td", { dataset: { label } }, iso
    ? el("time", { datetime: iso, title: formatFullTime(iso), class: "nowrap" }, formatAgo(iso))
    : el("span", { class: "muted" }, "—"));
}

/** Sign a user out of every browser; signing oneself out leads to the sign-in page. */
async function endSessions(user, me, button) {
  const whose = user.id === me.id ? "your own sessions, this one too" : `every session of ${user.email}`;
  if (!window.confirm(`End ${whose}? API tokens keep working.`)) return;
  button.disabled = true;
  try {
    const { ended } = await sendJSON(`/api/users/${encodeURIComponent(user.id)}/sessions`, "DELETE");
    if (user.id === me.id) {
      window.location.assign("/signin.html");
      return;
    }
    const done = byId("new-user-done");
    done.replaceChildren(el("strong", {}, `${user.email} is signed out`),
      el("span", {}, `${plural(ended, "session")} ended.`));
    done.hidden = false;
    await showUsers(me);
  } catch (error) {
    showError(byId("users-error"), error, "The sessions were not ended");
    button.disabled = false;
  }
}

function sessionsCell(user, me) {
  const count = user.sessions ?? 0;
  const button = el("button", {
    type: "button", class: "small", dataset: { action: "end-sessions" }, disabled: count === 0,
    "aria-label": `End the sessions of ${user.email}`,
  }, "End sessions");
  button.addEventListener("click", () => endSessions(user, me, button));
  return el("td", { dataset: { label: "Signed in" } }, el("div", { class: "button-row" },
    el("span", { class: "session-count" }, count ? plural(count, "session") : "not signed in"), button));
}

function userRow(user, me) {
  const refresh = () => showUsers(me);
  return el("tr", { dataset: { userId: user.id, disabled: user.disabled ? "1" : "" } },
    el("td", { class: "primary" }, el("strong", { class: "user-email" }, user.email),
      user.id === me.id ? el("span", { class: "muted small" }, " (you)") : null,
      user.disabled ? el("span", { class: "badge cancelled user-disabled" }, "disabled") : null),
    el("td", { dataset: { label: "Role" } }, roleControl(user, me, refresh)),
    timeCell(user.created_at, "Created"),
    sessionsCell(user, me),
    el("td", { dataset: { label: "Account" } }, el("div", { class: "button-row" }, accountButtons(user, me, refresh))));
}

async function showUsers(me) {
  try {
    const { users } = await getJSON("/api/users");
    setText(byId("user-count"), plural(users.length, "account"));
    byId("users-table").tBodies[0].replaceChildren(...users.map((user) => userRow(user, me)));
    showError(byId("users-error"), null);
  } catch (error) {
    showError(byId("users-error"), error, "The users cannot be listed");
  }
}

async function createUser(event, me) {
  event.preventDefault();
  const email = byId("new-user-email").value.trim();
  const password = byId("new-user-password").value;
  const role = byId("new-user-role").value;
  showError(byId("new-user-error"), null);
  byId("new-user-done").hidden = true;
  if (!email || password.length < 8) {
    showError(byId("new-user-error"), new Error("Give an e-mail address and a password of at least 8 characters."),
      "The user was not created");
    return;
  }
  const button = byId("create-user");
  button.disabled = true;
  try {
    const user = await sendJSON("/api/users", "POST", { email, password, role });
    const done = byId("new-user-done");
    done.replaceChildren(el("strong", {}, `${user.email} can now sign in`),
      el("span", {}, `as ${user.role}, on the `, el("a", { href: "/signin.html" }, "sign-in page"), "."));
    done.hidden = false;
    byId("user-form").reset();
    await showUsers(me);
  } catch (error) {
    showError(byId("new-user-error"), error, "The user was not created");
  } finally {
    button.disabled = false;
  }
}

async function discardDead(body, button) {
  button.disabled = true;
  try {
    await sendJSON("/api/admin/dead-letters/discard", "POST", body);
    await showDeadLetters();
  } catch (error) {
    showError(byId("dead-error"), error, "The dead letters were not discarded");
    button.disabled = false;
  }
}

function deadRow(message) {
  const discard = el("button", { type: "button", class: "small", dataset: { action: "discard" },
    "aria-label": `Discard the dead letter ${message.message_id || ""}`.trim(), disabled: !message.message_id }, "Discard");
  discard.addEventListener("click", () => discardDead({ message_ids: [message.message_id] }, discard));
  return el("tr", {},
    el("td", { class: "primary" }, el("pre", { class: "code-line dead-body" }, message.body || "(empty)"),
      message.message_id ? el("div", { class: "job-id" }, message.message_id) : null),
    el("td", { dataset: { label: "Reason" } }, message.reason || "—"),
    el("td", { class: "mono small", dataset: { label: "From queue" } }, message.queue || "—"),
    timeCell(message.dead_lettered_at, "When"),
    el("td", { class: "num", dataset: { label: "Size" } }, formatBytes(message.size)),
    el("td", { class: "num", dataset: { label: "" } }, discard));
}

async function showStorage() {
  try {
    const used = await getJSON("/api/admin/storage");
    const facts = [["Uploads", formatBytes(used.uploads)], ["Results", formatBytes(used.results)],
      ["Logs", formatBytes(used.logs)],
      ["Environments", used.environments === null ? "not on this host" : formatBytes(used.environments)],
      ["Results kept for", used.retention_days ? `${used.retention_days} days (NIAS_RETENTION_DAYS)` : "ever (NIAS_RETENTION_DAYS=0)"]];
    byId("storage-facts").replaceChildren(...facts.map(([term, value]) => el("div", { dataset: { fact: term } },
      el("dt", {}, term), el("dd", {}, value))));
  } catch (error) {
    showError(byId("storage-error"), error, "The disk use cannot be read");
  }
}

async function showDeadLetters() {
  const body = byId("dead-table").tBodies[0];
  try {
    const answer = await getJSON("/api/admin/dead-letters");
    setText(byId("dead-count"), plural(answer.count, "message"));
    setText(byId("dead-queue"), answer.queue || "dead");
    body.replaceChildren(...(answer.messages.length ? answer.messages.map(deadRow)
      : [el("tr", {}, el("td", { class: "empty", colspan: 6 }, "No dead letters: every message was usable."))]));
    byId("discard-all-dead").hidden = answer.count === 0;
    if (answer.count > answer.messages.length) {
      body.append(el("tr", {}, el("td", { class: "empty", colspan: 6 },
        `The first ${answer.messages.length} of ${answer.count} are shown.`)));
    }
    showError(byId("dead-error"), null);
  } catch (error) {
    setText(byId("dead-count"), "unknown");
    body.replaceChildren();
    showError(byId("dead-error"), error, "The dead-letter queue cannot be read");
  }
}

/** The units that run jobs without a mount namespace (no bubblewrap, or NIAS_SANDBOX=off), named in a banner. */
async function showSandboxWarning() {
  const { units } = await getJSON("/api/units");
  const bare = units.filter((unit) => unit.sandbox === "none" && unit.state !== "offline").map((unit) => unit.name);
  const banner = byId("sandbox-warning");
  banner.hidden = bare.length === 0;
  if (!bare.length) return;
  const which = bare.length === 1 ? `${bare[0]} runs` : `${bare.join(", ")} run`;
  banner.replaceChildren(
    el("strong", {}, `${which} jobs without a sandbox`),
    el("span", {}, "Bubblewrap is not in use there (not installed, or NIAS_SANDBOX=off), so a job sees every file "
      + "on that host its user may read, the other processes and the network; a unit not started as root runs "
      + "jobs as its own user, who can read the data dir and the job store. Install bubblewrap on that host and "
      + "set NIAS_SANDBOX=bwrap to require it."));
}

async function start() {
  const me = await getMe();
  if (me.role !== "admin") {
    byId("admin-only").hidden = false;
    document.title = "Admins only · NIAS";
    return;
  }
  byId("admin-view").hidden = false;
  byId("all-jobs").hidden = false;
  byId("user-form").addEventListener("submit", (event) => createUser(event, me));
  byId("create-invitation").addEventListener("click", createInvitation);
  byId("reload-dead").addEventListener("click", showDeadLetters);
  byId("discard-all-dead").addEventListener("click", (event) => {
    if (window.confirm("Discard every dead letter? They cannot be read again.")) discardDead({ all: true }, event.currentTarget);
  });
  copyButton("copy-invitation", "invitation-link");
  startPolling(showSandboxWarning, { intervalMs: UNITS_EVERY_MS });
  startPolling(showUnitsTable, { intervalMs: UNITS_EVERY_MS });
  await Promise.all([showUsers(me), showDeadLetters(), showStorage()]);
}

start().catch((error) => showError(byId("page-error"), error, "This page cannot be loaded"));

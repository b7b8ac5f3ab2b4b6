// Account page: who is signed in, API tokens (made, listed, revoked), data sets and, for admins, invitations.

import "./account-menu.js";
import { getJSON, getMe, request, sendJSON } from "./api.js";
import { wireDatasets } from "./datasets.js";
import { createInvitation } from "./invitations.js";
import { byId, copyButton, el, showError } from "./dom.js";
import { formatAgo, formatFullTime } from "./format.js";
import { wireWebhook } from "./webhook-form.js";

function timeCell(iso, label) {
  return el("td", { dataset: { label } }, iso
    ? el("time", { datetime: iso, title: formatFullTime(iso) }, formatAgo(iso))
    : el("span", { class: "muted" }, "never"));
}

function tokenRow(token) {
  const revoke = el("button", { type: "button", class: "small", "aria-label": `Revoke the token ${token.name}` }, "Revoke");
  revoke.addEventListener("click", async () => {
    if (!window.confirm(`Revoke the token "${token.name}"? Scripts using it stop working.`)) return;
    try {
      await request(`/api/tokens/${encodeURIComponent(token.id)}`, { method: "DELETE" });
      await showTokens();
    } catch (error) {
      showError(byId("tokens-error"), error, "The token was not revoked");
    }
  });
  return el("tr", { dataset: { tokenId: token.id } },
    el("td", { class: "primary" }, el("strong", {}, token.name)),
    timeCell(token.created_at, "Created"),
    timeCell(token.last_used_at, "Last used"),
    el("td", { dataset: { label: "Expires" } }, token.expires_at
      ? el("time", { datetime: token.expires_at, title: formatFullTime(token.expires_at) }, formatFullTime(token.expires_at))
      : el("span", { class: "muted" }, "never")),
    el("td", { class: "num", dataset: { label: "" } }, revoke));
}

async function showTokens() {
  const { tokens } = await getJSON("/api/tokens");
  const body = byId("tokens-table").tBodies[0];
  body.replaceChildren(...(tokens.length ? tokens.map(tokenRow)
    : [el("tr", {}, el("td", { class: "empty", colspan: 5 }, "No API tokens yet."))]));
}

async function createToken(event) {
  event.preventDefault();
  showError(byId("tokens-error"), null);
  const name = byId("token-name");
  const missing = !name.value.trim();
  name.toggleAttribute("aria-invalid", missing);
  byId("token-name-error").textContent = missing ? "Name: say where the token is used, e.g. laptop CLI." : "";
  if (missing) {
    name.focus();
    return;
  }
  const days = byId("token-expiry").value;
  try {
    const token = await sendJSON("/api/tokens", "POST", { name: name.value.trim(), expires_days: days ? Number(days) : null });
    byId("new-token-value").textContent = token.token;
    showSnippet(token.token);
    byId("copy-token").textContent = "Copy";
    byId("new-token").hidden = false;
    byId("token-name").value = "";
    await showTokens();
  } catch (error) {
    showError(byId("tokens-error"), error, "The token was not created");
  }
}

/** How to use this very server from a terminal, with a new token filled in once there is one. */
function showSnippet(token = "nias_…") {
  byId("cli-snippet").textContent = `export NIAS_URL=${window.location.origin} NIAS_TOKEN=${token}\n`
    + "nias submit my-analysis.zip --wait\n"
    + `curl -H "Authorization: Bearer $NIAS_TOKEN" ${window.location.origin}/api/jobs`;
}

async function changePassword(event) {
  event.preventDefault();
  showError(byId("password-error"), null);
  byId("password-done").hidden = true;
  try {
    const answer = await sendJSON("/api/me/password", "POST", { current: byId("current-password").value,
      new: byId("new-password").value });
    byId("password-done").replaceChildren(el("strong", {}, "Your password is changed"),
      el("span", {}, `${answer.other_sessions_ended} other ${answer.other_sessions_ended === 1 ? "session" : "sessions"} ended.`));
    byId("password-done").hidden = false;
    byId("password-form").reset();
  } catch (error) {
    showError(byId("password-error"), error, "The password was not changed");
  }
}

async function start() {
  const me = await getMe();
  showSnippet();
  byId("password-username").value = me.email;
  byId("password-form").addEventListener("submit", changePassword);
  wireWebhook();
  byId("who").textContent = `Signed in as ${me.email}${me.role === "admin" ? " (admin)" : ""}.`;
  byId("invite-section").hidden = me.role !== "admin";
  byId("token-form").addEventListener("submit", createToken);
  byId("create-invitation").addEventListener("click", createInvitation);
  copyButton("copy-token", "new-token-value");
  copyButton("copy-invitation", "invitation-link");
  // Enabled once their forms are wired: a click before would submit the form to the page itself.
  byId("create-token").disabled = false;
  byId("change-password").disabled = false;
  await Promise.all([showTokens(), wireDatasets(me)]);
}

start().catch((error) => showError(byId("tokens-error"), error, "Your account cannot be loaded"));

// Account page: who is signed in, API tokens (made, listed, revoked) and, for admins, invitations.

import "./account-menu.js";
import { getJSON, getMe, request, sendJSON } from "./api.js";
import { createInvitation } from "./invitations.js";
import { byId, copyButton, el, showError } from "./dom.js";
import { formatAgo, formatFullTime } from "./format.js";

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
    el("td", { class: "num", dataset: { label: "" } }, revoke));
}

async function showTokens() {
  const { tokens } = await getJSON("/api/tokens");
  const body = byId("tokens-table").tBodies[0];
  body.replaceChildren(...(tokens.length ? tokens.map(tokenRow)
    : [el("tr", {}, el("td", { class: "empty", colspan: 4 }, "No API tokens yet."))]));
}

async function createToken(event) {
  event.preventDefault();
  showError(byId("tokens-error"), null);
  try {
    const token = await sendJSON("/api/tokens", "POST", { name: byId("token-name").value.trim() });
    byId("new-token-value").textContent = token.token;
    byId("copy-token").textContent = "Copy";
    byId("new-token").hidden = false;
    byId("token-name").value = "";
    await showTokens();
  } catch (error) {
    showError(byId("tokens-error"), error, "The token was not created");
  }
}

async function start() {
  const me = await getMe();
  byId("who").textContent = `Signed in as ${me.email}${me.role === "admin" ? " (admin)" : ""}.`;
  byId("invite-section").hidden = me.role !== "admin";
  byId("token-form").addEventListener("submit", createToken);
  byId("create-invitation").addEventListener("click", createInvitation);
  copyButton("copy-token", "new-token-value");
  copyButton("copy-invitation", "invitation-link");
  await showTokens();
}

start().catch((error) => showError(byId("tokens-error"), error, "Your account cannot be loaded"));

// An admin's controls for one account: its role, disable and enable it, reset its password.

import { ApiError, request, sendJSON } from "./api.js";
import { byId, el, showError } from "./dom.js";

const userPath = (user, tail = "") => `/api/users/${encodeURIComponent(user.id)}${tail}`;

function report(title, text) {
  const done = byId("new-user-done");
  done.replaceChildren(el("strong", {}, title), el("span", {}, text));
  done.hidden = false;
}

async function act(button, what, perform, refresh) {
  button.disabled = true;
  showError(byId("users-error"), null);
  try {
    await perform();
    await refresh();
  } catch (error) {
    showError(byId("users-error"), error instanceof ApiError ? error : new Error(String(error)), `${what} did not work`);
    button.disabled = false;
  }
}

export function roleControl(user, me, refresh) {
  const select = el("select", { class: "small", "aria-label": `Role of ${user.email}`, dataset: { action: "role" } },
    ["user", "admin"].map((role) => el("option", { value: role, selected: user.role === role }, role)));
  select.addEventListener("change", () => act(select, "Changing the role", async () => {
    await sendJSON(userPath(user), "PATCH", { role: select.value });
    report(`${user.email} is now ${select.value === "admin" ? "an admin" : "a user"}`, "");
  }, async () => { select.disabled = false; await refresh(); }));
  select.disabled = user.id === me.id; // an admin does not demote themselves from here
  return select;
}

export function accountButtons(user, me, refresh) {
  const toggle = el("button", { type: "button", class: "small", dataset: { action: user.disabled ? "enable" : "disable" },
    "aria-label": `${user.disabled ? "Enable" : "Disable"} ${user.email}`, disabled: user.id === me.id },
  user.disabled ? "Enable" : "Disable");
  toggle.addEventListener("click", () => {
    if (!user.disabled && !window.confirm(`Disable ${user.email}? They are signed out and their API tokens stop working until enabled again.`)) return;
    act(toggle, user.disabled ? "Enabling" : "Disabling", async () => {
      await sendJSON(userPath(user), "PATCH", { disabled: !user.disabled });
      report(`${user.email} is ${user.disabled ? "enabled again" : "disabled"}`, "");
    }, refresh);
  });
  const reset = el("button", { type: "button", class: "small", dataset: { action: "reset-password" },
    "aria-label": `Reset the password of ${user.email}` }, "Reset password");
  reset.addEventListener("click", () => {
    if (!window.confirm(`Give ${user.email} a new random password? Their sessions end; pass the new one on safely.`)) return;
    act(reset, "Resetting the password", async () => {
      const answer = await (await request(userPath(user, "/password"), { method: "POST" })).json();
      const done = byId("new-user-done");
      done.replaceChildren(el("strong", {}, `New password for ${user.email} (shown once)`),
        el("div", { class: "secret" }, el("code", { id: "reset-password-value" }, answer.password)));
      done.hidden = false;
    }, refresh);
  });
  return [toggle, reset];
}

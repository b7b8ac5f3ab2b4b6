// Sign-in page: start a session, or create an account (open or by invitation), then go back.

import { byId, showError } from "./dom.js";
import { nextPage, register, signIn } from "./session.js";

function wireForm(formId, errorId, title, submit) {
  const form = byId(formId);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    showError(byId(errorId), null);
    button.disabled = true;
    try {
      await submit();
      window.location.assign(nextPage());
    } catch (error) {
      showError(byId(errorId), error, title);
      button.disabled = false;
    }
  });
}

function value(id) {
  return byId(id).value.trim();
}

wireForm("signin-form", "signin-error", "You are not signed in",
  () => signIn(value("signin-email"), byId("signin-password").value));
wireForm("register-form", "register-error", "The account was not created",
  () => register(value("register-email"), byId("register-password").value, value("register-invitation")));

const invitation = new URLSearchParams(window.location.search).get("invitation");
/** Registration shows only where it is open, or to someone who came with an invitation link. */
async function showRegistration() {
  let mode = "invite";
  try {
    const answer = await fetch("/api/session", { headers: { Accept: "application/json" } });
    mode = (await answer.json()).registration || mode;
  } catch (_) {
    // Unknown: shown only with an invitation.
  }
  const form = byId("register-form");
  form.hidden = !(mode === "open" || (invitation && mode === "invite"));
  if (!form.hidden && mode === "open") byId("register-invitation").closest(".field").hidden = !invitation;
}

showRegistration();
if (invitation) {
  byId("register-form").hidden = false;
  byId("register-invitation").value = invitation;
  byId("register-email").focus();
} else {
  byId("signin-email").focus();
}

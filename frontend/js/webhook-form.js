// The account's webhook: the URL NIAS calls when the user's jobs end, and the secret that signs the calls.

import { ApiError, getJSON, request, sendJSON } from "./api.js";
import { byId, copyButton, showError } from "./dom.js";

function show(hook) {
  byId("webhook-url").value = hook.url || "";
  byId("remove-webhook").hidden = !hook.url;
  byId("webhook-secret-box").hidden = !hook.secret;
  byId("webhook-secret").textContent = hook.secret || "";
}

export function wireWebhook() {
  copyButton("copy-webhook-secret", "webhook-secret");
  // The form opens once the saved webhook is shown, so nothing typed before is overwritten.
  getJSON("/api/me/webhook")
    .then((hook) => {
      show(hook);
      byId("webhook-fields").disabled = false;
    })
    .catch((error) => showError(byId("webhook-error"), error, "The webhook cannot be read"));
  byId("webhook-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(byId("webhook-error"), null);
    const input = byId("webhook-url");
    input.removeAttribute("aria-invalid");
    try {
      show(await sendJSON("/api/me/webhook", "PUT", { url: input.value.trim() }));
    } catch (error) {
      if (error instanceof ApiError && error.details.field === "url") input.setAttribute("aria-invalid", "true");
      showError(byId("webhook-error"), error, "The webhook was not saved");
    }
  });
  byId("remove-webhook").addEventListener("click", async () => {
    try {
      await request("/api/me/webhook", { method: "DELETE" });
      show({});
    } catch (error) {
      showError(byId("webhook-error"), error, "The webhook was not removed");
    }
  });
}

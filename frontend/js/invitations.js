// Making an invitation (account and admin pages): a one-use code, shown as a registration link.

import { sendJSON } from "./api.js";
import { byId, showError } from "./dom.js";

/** Ask for an invitation and show its link in the page's `#invitation` block. */
export async function createInvitation() {
  showError(byId("invite-error"), null);
  try {
    const { invitation } = await sendJSON("/api/invitations", "POST", {});
    byId("invitation-link").textContent = `${window.location.origin}/signin.html?invitation=${encodeURIComponent(invitation)}`;
    byId("copy-invitation").textContent = "Copy";
    byId("invitation").hidden = false;
  } catch (error) {
    showError(byId("invite-error"), error, "No invitation was made");
  }
}

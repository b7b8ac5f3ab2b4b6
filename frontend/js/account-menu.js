// The header's right side on every signed-in page: who is signed in, and signing out; for admins,
// the Admin page in the main navigation.

import { getMe, sendJSON } from "./api.js";
import { byId, el } from "./dom.js";

async function signOut(button) {
  button.disabled = true;
  try {
    await sendJSON("/api/auth/logout", "POST");
  } finally {
    window.location.assign("/signin.html");
  }
}

function showAdminLink() {
  const list = document.querySelector(".site-nav ul");
  if (!list || list.querySelector('a[href="/admin.html"]')) return;
  const link = el("a", { href: "/admin.html" }, "Admin");
  if (window.location.pathname === "/admin.html") link.setAttribute("aria-current", "page");
  list.append(el("li", {}, link));
}

async function showAccount() {
  const slot = byId("account");
  if (!slot) return;
  try {
    const me = await getMe();
    const button = el("button", { type: "button", class: "small", id: "sign-out" }, "Sign out");
    button.addEventListener("click", () => signOut(button));
    slot.replaceChildren(
      el("a", { href: "/account.html", class: "account-link", title: "Your account and API tokens" },
        me.email, me.role === "admin" ? el("span", { class: "role" }, "admin") : null),
      button);
    if (me.role === "admin") showAdminLink();
  } catch (_) {
    // Unsigned visitors are sent to the sign-in page by the API layer.
  }
}

showAccount();

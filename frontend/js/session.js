// Starting a browser session: signing in and registering (the only API calls open without one).

import { errorFromBody, ApiError } from "./errors.js";

async function post(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
  } catch (_) {
    throw new ApiError("The server cannot be reached. Check the connection and try again.", { code: "unreachable" });
  }
  if (!response.ok) throw errorFromBody(response.status, await response.text());
  return response.json();
}

export function signIn(email, password) {
  return post("/api/auth/login", { email, password });
}

export function register(email, password, invitation) {
  return post("/api/auth/register", { email, password, invitation: invitation || undefined });
}

/** Where to go after signing in: `?next=` when it is a path on this site, else the home page. */
export function nextPage() {
  const next = new URLSearchParams(window.location.search).get("next") || "/";
  const local = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\");
  return local && !next.startsWith("/signin.html") ? next : "/";
}

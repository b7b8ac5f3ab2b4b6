// Talking to the NIAS API: JSON in, `ApiError` (with the server's code and message) out.

import { ApiError, errorFromBody } from "./errors.js";
import { session, signInUrl } from "./signed-in.js";

export { ApiError, errorFromBody, signInUrl };

const SAFE_METHODS = new Set(["GET", "HEAD"]);
let mePromise = null;
let leaving = false;

/** A session that ends while the page is open makes API calls answer 401: go to the sign-in page, once. */
export function goToSignIn() {
  if (leaving) return;
  leaving = true;
  window.location.assign(signInUrl());
}

/** The signed-in user and the session's CSRF token (`GET /api/me`), asked once per page
 * (the page's first question, `GET /api/session`, answered it already). */
export function getMe() {
  if (!mePromise && session && session.user) mePromise = Promise.resolve(session.user);
  mePromise = mePromise || getJSON("/api/me").catch((error) => {
    mePromise = null;
    throw error;
  });
  return mePromise;
}

export async function csrfHeaders() {
  return { "X-CSRF-Token": (await getMe()).csrf_token };
}

export async function request(path, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (!SAFE_METHODS.has(method)) Object.assign(headers, await csrfHeaders());
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (_) {
    throw new ApiError("The server cannot be reached. Check the connection; the page retries by itself.",
      { code: "unreachable" });
  }
  if (response.status === 401) goToSignIn();
  if (!response.ok) {
    throw errorFromBody(response.status, await response.text());
  }
  return response;
}

export async function sendJSON(path, method, body) {
  const response = await request(path, {
    method, body: JSON.stringify(body ?? {}), headers: { "Content-Type": "application/json" },
  });
  return response.status === 204 ? null : response.json();
}

export async function getJSON(path) {
  return (await request(path)).json();
}

export function jobsQuery(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  return `/api/jobs?${query}`;
}

export const jobUrl = (id) => `/job.html?id=${encodeURIComponent(id)}`;
export const resultUrl = (id) => `/api/jobs/${encodeURIComponent(id)}/result`;
export const logUrl = (id) => `/api/jobs/${encodeURIComponent(id)}/log`;
export const filesUrl = (id) => `/api/jobs/${encodeURIComponent(id)}/files`;

export function fileUrl(id, name, params = {}) {
  const path = name.split("/").map(encodeURIComponent).join("/");
  const query = new URLSearchParams(params).toString();
  return `${filesUrl(id)}/${path}${query ? `?${query}` : ""}`;
}

let limitsPromise = null;

/** The server's upload limits, asked once per page. */
export function getLimits() {
  limitsPromise = limitsPromise || getJSON("/api/limits");
  return limitsPromise;
}

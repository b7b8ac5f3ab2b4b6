// Pages for signed-in users ask `GET /api/session` before anything else (api.js waits for this
// module): a signed-out visitor goes straight to the sign-in page, and no request on the way
// answers 401, so the browser's console stays clean.

export function signInUrl() {
  const here = `${window.location.pathname}${window.location.search}`;
  return `/signin.html?next=${encodeURIComponent(here)}`;
}

/** `{"signed_in": false}` or `{"signed_in": true, "user": ...}`; null when the server cannot say. */
async function askSession() {
  try {
    const response = await fetch("/api/session", { headers: { Accept: "application/json" } });
    return response.ok ? await response.json() : null;
  } catch (_) {
    return null; // unreachable: the page's own requests show it
  }
}

export const session = await askSession();

if (session && !session.signed_in) {
  window.location.replace(signInUrl());
  await new Promise(() => {}); // nothing more runs on this page: it is being left
}

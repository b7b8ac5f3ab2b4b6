// Job changes pushed by the server (`GET /api/events`, server-sent events). The browser reconnects
// by itself; `onStatus(false)` tells the page to fall back on polling until the stream is back.

/**
 * Follow `event: job` messages at `url`; `onJob(job)` gets each job, `onStatus(open)` each change
 * between a working and a broken stream. Returns `{ close(), get open() }`.
 */
/**
 * True when `fresh` is older news than `known`: an event sent before a read that the page has
 * already applied. A job never leaves a final state, so a final job is never replaced by an
 * unfinished one.
 */
export function isStale(known, fresh) {
  if (!known || !FINAL.has(known.state)) return false;
  // Nor does a job whose kept result has been recorded go back to waiting for it.
  return !FINAL.has(fresh.state) || (!known.result_pending && Boolean(fresh.result_pending));
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function followJobs(url, onJob, { onStatus = () => {} } = {}) {
  if (typeof EventSource === "undefined") {
    onStatus(false);
    return { close() {}, get open() { return false; } };
  }
  const source = new EventSource(url);
  let open = false;
  const setOpen = (value) => {
    if (open === value) return;
    open = value;
    onStatus(value);
  };
  source.addEventListener("open", () => setOpen(true));
  source.addEventListener("error", () => setOpen(false));
  source.addEventListener("job", (event) => {
    let job;
    try {
      job = JSON.parse(event.data);
    } catch (_) {
      return; // a garbled message: the next one, or the fallback poll, brings the news
    }
    onJob(job);
  });
  // Leaving the page frees the server's thread at once instead of at its next keep-alive.
  window.addEventListener("pagehide", () => source.close());
  return {
    close() {
      source.close();
      setOpen(false);
    },
    get open() { return open; },
  };
}

// Job changes pushed by the server (`GET /api/events`, server-sent events). The browser reconnects
// by itself; `onStatus(false)` tells the page to fall back on polling until the stream is back.

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

const RETRY_REFUSED_MS = 30000; // a refused stream is asked for again after this, then less often
const RETRY_REFUSED_MAX_MS = 300000;

/**
 * Follow `event: job` messages at `url`; `onJob(job)` gets each job, `onStatus(open)` each change
 * between a working and a broken (or refused) stream. Returns `{ close(), get open() }`.
 */
export function followJobs(url, onJob, { onStatus = () => {} } = {}) {
  if (typeof EventSource === "undefined") {
    onStatus(false);
    return { close() {}, get open() { return false; } };
  }
  let source = null;
  let open = false;
  let stopped = false;
  let retry = null;
  let refusals = 0;
  const setOpen = (value) => {
    if (open === value) return;
    open = value;
    onStatus(value);
  };
  const connect = () => {
    retry = null;
    if (stopped) return;
    source = new EventSource(url);
    source.addEventListener("open", () => {
      refusals = 0;
      setOpen(true);
    });
    source.addEventListener("error", () => {
      setOpen(false);
      // A dropped stream is reconnected by the browser. A refused one (429: too many streams
      // open; or any answer but 200) is not: the page polls meanwhile, and asks again later.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        refusals += 1;
        retry = setTimeout(connect, Math.min(RETRY_REFUSED_MS * 2 ** (refusals - 1), RETRY_REFUSED_MAX_MS));
      }
    });
    source.addEventListener("job", (event) => {
      let job;
      try {
        job = JSON.parse(event.data);
      } catch (_) {
        return; // a garbled message: the next one, or the fallback poll, brings the news
      }
      onJob(job);
    });
  };
  const stop = () => {
    stopped = true;
    if (retry !== null) clearTimeout(retry);
    if (source) source.close();
  };
  connect();
  // Leaving the page frees the server's stream at once instead of at its next keep-alive.
  window.addEventListener("pagehide", stop);
  return {
    close() {
      stop();
      setOpen(false);
    },
    get open() { return open; },
  };
}

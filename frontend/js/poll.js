// Repeating a refresh every few seconds, resting while the tab is hidden and backing off on errors.
// `refresh` returns false to stop; a thrown error is retried later, each time after a longer pause.
// `intervalMs` may be a function, asked before every wait (a slower pace while a live stream works).

export function startPolling(refresh, { intervalMs = 2000, maxBackoffMs = 15000 } = {}) {
  let timer = null;
  let stopped = false;
  let running = false;
  let wanted = false;
  let failures = 0;

  async function tick() {
    timer = null;
    if (stopped || document.hidden) return;
    if (running) {
      wanted = true;
      return;
    }
    running = true;
    wanted = false;
    try {
      if ((await refresh()) === false) stopped = true;
      failures = 0;
    } catch (_) {
      failures += 1;
    } finally {
      running = false;
    }
    if (wanted) tick();
    else schedule();
  }

  function schedule() {
    if (stopped || timer !== null) return;
    const base = typeof intervalMs === "function" ? intervalMs() : intervalMs;
    timer = setTimeout(tick, Math.min(base * 2 ** failures, Math.max(maxBackoffMs, base)));
  }

  function now() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    tick();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !running) now();
  });

  tick();
  return {
    now,
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
    },
  };
}

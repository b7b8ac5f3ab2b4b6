// Numbers, sizes, times and durations as a researcher reads them.

export const FINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);
export const STATES = ["queued", "running", "paused", "succeeded", "failed", "cancelled"];

export function isFinal(state) {
  return FINAL_STATES.has(state);
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const total = Math.round(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours) return `${hours} h ${minutes} min`;
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

const full = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  timeZoneName: "short",
});
const sameYear = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** A moment as briefly as is still clear: the clock alone for today, no year for this year. */
export function formatTime(iso, now = new Date()) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (date.toDateString() === now.toDateString()) return clock.format(date);
  return date.getFullYear() === now.getFullYear() ? sameYear.format(date) : full.format(date);
}

/** Date, time and time zone: "3 Dec 2026, 07:14:12 CET", for details and every tooltip. */
export function formatFullTime(iso) {
  return iso ? full.format(new Date(iso)) : "—";
}

/** A duration that says whether paused time is left out of it. */
export function formatRunDuration(seconds, pausedSeconds) {
  const text = formatDuration(seconds);
  return pausedSeconds > 0.5 ? `${text} (paused ${formatDuration(pausedSeconds)} not counted)` : text;
}

export function formatClock(date) {
  return clock.format(date);
}

export function secondsSince(iso, now = Date.now()) {
  return iso ? Math.max(0, (now - new Date(iso).getTime()) / 1000) : null;
}

export function formatAgo(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = secondsSince(iso, now);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return formatTime(iso);
}

export function plural(count, word, many = `${word}s`) {
  return `${count} ${count === 1 ? word : many}`;
}

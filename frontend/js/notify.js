// Browser notifications for the jobs a user follows: asked for once, on the user's own click, and
// shown when a followed job ends (from its page, or the results while they are open).

const KEY = "nias.followed";
const MAX_FOLLOWED = 200;

function followed() {
  try {
    return new Set(JSON.parse(localStorage.getItem(KEY) || "[]"));
  } catch (_) {
    return new Set();
  }
}

function keep(ids) {
  localStorage.setItem(KEY, JSON.stringify([...ids].slice(-MAX_FOLLOWED)));
}

export const canNotify = () => typeof Notification !== "undefined";
export const isFollowed = (id) => followed().has(id);

/** Follow a job: asks the browser's permission the first time (never again once answered). */
export async function follow(id) {
  if (!canNotify()) return "unsupported";
  let permission = Notification.permission;
  if (permission === "default") permission = await Notification.requestPermission();
  if (permission !== "granted") return permission;
  const ids = followed();
  ids.add(id);
  keep(ids);
  return "granted";
}

export function unfollow(id) {
  const ids = followed();
  ids.delete(id);
  keep(ids);
}

/** A followed job that has ended: one notification, then it is followed no more. */
export function notifyIfEnded(job) {
  if (!canNotify() || Notification.permission !== "granted" || !isFollowed(job.id)) return false;
  if (!["succeeded", "failed", "cancelled"].includes(job.state) || job.result_pending) return false;
  unfollow(job.id);
  const note = new Notification(`${job.name}: ${job.state}`, {
    body: job.state === "failed" && job.error ? job.error.split("\n")[0] : `The job ${job.state}.`,
    tag: `nias-${job.id}`,
  });
  note.onclick = () => { window.focus(); window.location.assign(`/job.html?id=${encodeURIComponent(job.id)}`); };
  return true;
}

/** The job page's "Notify me" button for `job`, kept in step with the permission and the job. */
export function renderFollowButton(button, job) {
  const final = ["succeeded", "failed", "cancelled"].includes(job.state);
  button.hidden = !canNotify() || final;
  if (button.hidden) return;
  const blocked = Notification.permission === "denied";
  button.disabled = blocked;
  button.textContent = blocked ? "Notifications blocked in this browser"
    : isFollowed(job.id) ? "Notifying you when it ends" : "Notify me when it ends";
  button.setAttribute("aria-pressed", String(isFollowed(job.id)));
}

// A job's log as a CI shows one: each line with its time (on demand) and stream, stderr marked,
// ANSI colours drawn, a progress bar as one line that updates, NIAS's set-up folded above the
// job's own output, search, and a follow mode that lets go when the reader scrolls up.
// The log's lines are `<UTC time> [out|err|nias] text`; one ending in "\r" is a bar's live state.

import { el } from "./dom.js";
import { formatFullTime } from "./format.js";

const LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) \[(out|err|nias)\] ?(.*?)(\r?)$/s;
const MAX_LINES = 20000;
const AT_END_PX = 24;
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** `{at, stream, text, live}` of one line without its newline (a line of an older log has no time). */
export function parseLine(line) {
  const match = LINE.exec(line);
  if (!match) return { at: null, stream: line.startsWith("[nias] ") ? "nias" : "out", text: line, live: false };
  return { at: match[1], stream: match[2], text: match[3], live: match[4] === "\r" };
}

const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

function sgrClasses(codes, current) {
  let { bold, colour } = current;
  for (const code of codes.length ? codes : [0]) {
    if (code === 0) { bold = false; colour = null; }
    else if (code === 1) bold = true;
    else if (code === 22) bold = false;
    else if (code >= 30 && code <= 37) colour = COLOURS[code - 30];
    else if (code >= 90 && code <= 97) colour = `bright-${COLOURS[code - 90]}`;
    else if (code === 39) colour = null;
  }
  return { bold, colour };
}

/** The text's runs with their ANSI styles as spans; other escape sequences are left out. */
export function ansiNodes(text) {
  const nodes = [];
  let style = { bold: false, colour: null };
  const pattern = /\x1b\[([0-9;?]*)([A-Za-z])/g;
  let last = 0;
  const push = (piece) => {
    if (!piece) return;
    const classes = [style.bold ? "ansi-bold" : "", style.colour ? `ansi-${style.colour}` : ""].filter(Boolean);
    nodes.push(classes.length ? el("span", { class: classes.join(" ") }, piece) : piece);
  };
  for (let match = pattern.exec(text); match; match = pattern.exec(text)) {
    push(text.slice(last, match.index));
    last = pattern.lastIndex;
    if (match[2] === "m") style = sgrClasses(match[1].split(";").filter(Boolean).map(Number), style);
  }
  push(text.slice(last).replace(/\x1b/g, ""));
  return nodes;
}

function lineNode(line) {
  const time = line.at
    ? el("time", { class: "log-time", datetime: line.at, title: formatFullTime(line.at) }, clock.format(new Date(line.at)))
    : el("span", { class: "log-time" });
  return el("div", { class: `log-line ${line.stream}${line.live ? " live" : ""}`, dataset: { stream: line.stream } },
    time, el("span", { class: "log-text" }, ...ansiNodes(line.text)));
}

export class LogView {
  /** `root` holds the set-up section, the lines and the toolbar's controls (by id). */
  constructor({ setup, setupCount, lines, follow, times, search, searchCount, searchNext, note }) {
    Object.assign(this, { setup, setupCount, lines, follow, times, search, searchCount, searchNext, note });
    this.carry = "";
    this.live = new Map(); // stream -> the line node its next line replaces
    this.ownOutput = false;
    this.count = 0;
    this.cut = false;
    this.matches = [];
    this.matchIndex = -1;
    this.autoTop = 0; // where the view last scrolled itself to
    this.wire();
    this.updateSetup();
  }

  wire() {
    this.times.addEventListener("change", () => this.lines.closest(".log-view").classList.toggle("show-times", this.times.checked));
    this.lines.addEventListener("scroll", () => {
      const top = this.lines.scrollTop;
      if (top + this.lines.clientHeight >= this.lines.scrollHeight - AT_END_PX) this.follow.checked = true;
      else if (top < this.autoTop - 2) this.follow.checked = false; // the reader scrolled up: let go
      this.autoTop = Math.min(this.autoTop, top);
    });
    this.follow.addEventListener("change", () => { if (this.follow.checked) this.toEnd(); });
    this.search.addEventListener("input", () => this.find());
    this.search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); this.next(); }
    });
    this.searchNext.addEventListener("click", () => this.next());
  }

  reset(banner) {
    this.carry = "";
    this.live.clear();
    this.ownOutput = false;
    this.count = 0;
    this.setup.querySelector(".log-setup-lines").replaceChildren();
    this.updateSetup();
    this.lines.replaceChildren();
    if (banner) this.lines.append(el("div", { class: "log-line nias" }, el("span", { class: "log-time" }), el("span", { class: "log-text" }, banner)));
  }

  /** Text that came after the last piece; a line is drawn once its newline has arrived. */
  append(text, { final = false } = {}) {
    const parts = (this.carry + text).split("\n");
    this.carry = final ? "" : parts.pop();
    if (final && parts[parts.length - 1] === "") parts.pop();
    for (const raw of parts) this.add(parseLine(raw));
    this.trim();
    this.updateSetup();
    if (this.search.value) this.find({ keepPlace: true });
    if (this.follow.checked) this.toEnd();
  }

  add(line) {
    const node = lineNode(line);
    const previous = this.live.get(line.stream);
    if (previous) {
      previous.replaceWith(node);
      this.live.delete(line.stream);
    } else if (line.stream === "nias" && !this.ownOutput) {
      this.setup.querySelector(".log-setup-lines").append(node);
    } else {
      if (line.stream !== "nias") this.ownOutput = true;
      this.lines.append(node);
      this.count += 1;
    }
    if (line.live) this.live.set(line.stream, node);
  }

  trim() {
    while (this.count > MAX_LINES) {
      this.lines.firstElementChild.remove();
      this.count -= 1;
      this.cut = true;
    }
    this.note.hidden = !this.cut;
    this.note.textContent = this.cut ? "The start of this long log is not shown here; download the full log to read it all." : "";
  }

  /** Always there (the job's output below never moves when it fills): its count of NIAS's lines. */
  updateSetup() {
    const count = this.setup.querySelector(".log-setup-lines").childElementCount;
    this.setupCount.textContent = count ? `${count} ${count === 1 ? "line" : "lines"}` : "no lines yet";
  }

  toEnd() {
    this.scrollTo(this.lines.scrollHeight - this.lines.clientHeight);
  }

  /** Scroll the lines without taking it for the reader's own scrolling up. */
  scrollTo(top) {
    const target = Math.max(0, Math.min(Math.round(top), this.lines.scrollHeight - this.lines.clientHeight));
    this.autoTop = target;
    if (Math.abs(this.lines.scrollTop - target) >= 1) this.lines.scrollTop = target;
  }

  find({ keepPlace = false } = {}) {
    const wanted = this.search.value.trim().toLowerCase();
    for (const node of this.matches) node.classList.remove("match", "current");
    this.matches = wanted
      ? [...this.setup.querySelectorAll(".log-line"), ...this.lines.querySelectorAll(".log-line")]
        .filter((node) => node.querySelector(".log-text").textContent.toLowerCase().includes(wanted))
      : [];
    for (const node of this.matches) node.classList.add("match");
    if (!keepPlace) this.matchIndex = -1;
    this.searchCount.textContent = wanted ? `${this.matches.length} ${this.matches.length === 1 ? "match" : "matches"}` : "";
    if (!keepPlace && this.matches.length) this.next();
  }

  next() {
    if (!this.matches.length) return;
    this.matchIndex = (this.matchIndex + 1) % this.matches.length;
    const node = this.matches[this.matchIndex];
    for (const other of this.matches) other.classList.remove("current");
    node.classList.add("current");
    this.follow.checked = false;
    if (this.setup.contains(node)) {
      this.setup.open = true;
      node.scrollIntoView({ block: "nearest" });
    } else {
      this.scrollTo(node.offsetTop - this.lines.clientHeight / 3);
    }
    this.searchCount.textContent = `${this.matchIndex + 1} of ${this.matches.length}`;
  }
}

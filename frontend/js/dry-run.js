// The report of "Check only" (`POST /api/jobs?dry_run=true`): the zip rules, Python syntax and
// whether requirements.txt resolves, each with what to fix.

import { el } from "./dom.js";
import { plural } from "./format.js";

function syntaxErrorItem(error) {
  const where = error.line ? `${error.file}, line ${error.line}` : error.file;
  const text = (error.text || "").replace(/\s+$/, "");
  const caret = text && error.column ? `\n${" ".repeat(Math.max(0, error.column - 1))}^` : "";
  return el("li", { class: "syntax-error" },
    el("strong", { class: "mono" }, where), `: ${error.message}`,
    text ? el("pre", { class: "code-line" }, `${text}${caret}`) : null);
}

const DESCRIBE = {
  zip: (check) => ({
    title: "Zip",
    body: check.ok
      ? [`code.py found${check.root && check.root !== "." ? ` in ${check.root}` : " at the top"}`,
        check.files !== undefined ? `, ${plural(check.files, "file")}.` : "."]
      : [check.message || "The zip breaks the upload rules.",
        check.code ? el("div", { class: "small mono" }, `code: ${check.code}`) : null],
  }),
  syntax: (check) => {
    const errors = check.errors || [];
    if (check.ok) return { title: "Python syntax", body: ["Every .py file compiles."] };
    if (!errors.length) return { title: "Python syntax", body: [check.message || "The code was not checked."] };
    return {
      title: "Python syntax",
      body: [`${plural(errors.length, "syntax error")}:`, el("ul", { class: "syntax-errors" }, errors.map(syntaxErrorItem))],
    };
  },
  requirements: (check) => {
    if (!check.ok && check.code === "unsafe_requirements") {
      return { title: "Requirements", body: ["requirements.txt may name packages from the index only:",
        el("pre", { class: "code-line" }, check.message)] };
    }
    if (!check.ok) {
      return { title: "Requirements", body: ["requirements.txt does not resolve against the package index:",
        el("pre", { class: "code-line" }, check.message || "no reason given")] };
    }
    if (!check.resolved) return { title: "Requirements", body: [check.message || "Nothing to install."] };
    return {
      title: "Requirements",
      body: [`They resolve: ${plural(check.resolved.length, "package")}.`,
        el("details", {}, el("summary", {}, "Show the packages"),
          el("pre", { class: "code-line" }, check.resolved.join("\n")))],
    };
  },
};

function checkItem(check) {
  const describe = DESCRIBE[check.check] || ((c) => ({ title: c.check, body: [c.message || ""] }));
  const { title, body } = describe(check);
  return el("li", { class: `check-item ${check.ok ? "ok" : "bad"}`, dataset: { check: check.check } },
    el("span", { class: "check-mark", "aria-hidden": "true" }, check.ok ? "✓" : "✗"),
    el("div", {}, el("strong", {}, `${title}: ${check.ok ? "passed" : "failed"}`), el("div", {}, ...body)));
}

/** A dry run the server refused outright (400: the zip breaks the upload rules), as a report. */
export function reportFromRefusal(error) {
  return { ok: false, checks: [{ check: "zip", ok: false, code: error.code, message: error.message }] };
}

function summary(report, label) {
  if (report.ok) {
    return ["Everything checks out",
      `${label} would be accepted, its code compiles and its requirements resolve. Nothing was queued.`];
  }
  const checks = report.checks || [];
  const zip = checks.find((check) => check.check === "zip");
  if (zip && !zip.ok) {
    const rest = checks.some((check) => check.check !== "zip")
      ? "" : " Its code and requirements are checked once the zip is accepted.";
    return ["The zip breaks the upload rules",
      `The server would refuse ${label}: fix what is marked below, then check again.${rest} Nothing was queued.`];
  }
  return ["The check found problems", `Fix what is marked below in ${label}, then check again. Nothing was queued.`];
}

/** Fill `container` with the server's `{ok, checks}` report about the project called `label`. */
export function renderCheckReport(container, report, label) {
  const [title, text] = summary(report, label);
  container.replaceChildren(
    el("div", { class: `notice ${report.ok ? "ok" : "error"}` },
      el("strong", { id: "check-title" }, title), el("span", {}, text)),
    el("ul", { class: "checks" }, (report.checks || []).map(checkItem)));
}

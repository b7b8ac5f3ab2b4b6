// Upload: pick or drop a .zip (or a folder, zipped here), check it, send it with a progress bar,
// and open the new job's page once the server has accepted it; or only have the server check it.

import "./account-menu.js";
import { csrfHeaders, errorFromBody, getLimits, goToSignIn, jobUrl } from "./api.js";
import { byId, el } from "./dom.js";
import { renderCheckReport, reportFromRefusal } from "./dry-run.js";
import { formatBytes, formatDuration, plural } from "./format.js";
import { filesFromFolderInput, isSkipped, walkEntry } from "./project-files.js";
import { fillPoolChoice } from "./pools.js";
import { chosenDatasets, fillDatasetChoice } from "./datasets.js";
import { zipFiles } from "./zip.js";
import { readJsonField, sweepUrl } from "./params-fields.js";
import "./commands.js";

const form = byId("upload-form");
const errorBox = byId("upload-error");
const progress = byId("upload-progress");
let limits = null;
let choice = null; // {kind: "zip", file, label} or {kind: "folder", files: [{path, file}], label, size}
let currentUpload = null;
let limitsKnown = null; // settles once the server's limits have been asked for

class UploadRefused extends Error {}

function showProblem(title, message, code) {
  errorBox.replaceChildren(el("strong", {}, title), el("span", { id: "upload-error-message" }, message));
  if (code) errorBox.append(el("div", { class: "small mono" }, `code: ${code}`));
  errorBox.hidden = false;
  errorBox.scrollIntoView({ block: "nearest" });
}

function clearProblem() {
  errorBox.hidden = true;
  errorBox.replaceChildren();
}

function maxUploadBytes() {
  return limits ? limits.max_upload_mb * 1024 * 1024 : Infinity;
}

function checkSize(bytes, what) {
  if (bytes > maxUploadBytes()) {
    throw new UploadRefused(
      `${what} is ${formatBytes(bytes)}, over this server's limit of ${limits.max_upload_mb} MB per upload.`);
  }
}

// Choosing what to upload

function showChoice() {
  byId("check-report").hidden = true;
  byId("chosen").hidden = !choice;
  if (!choice) return;
  byId("chosen-name").textContent = choice.label;
  byId("chosen-detail").textContent = choice.kind === "zip"
    ? `${formatBytes(choice.file.size)} zip file`
    : `${plural(choice.files.length, "file")}, ${formatBytes(choice.size)}; zipped in your browser when you upload`;
  byId("job-name").placeholder = choice.label.replace(/\/$/, "").replace(/\.zip$/i, "");
}

function chooseZip(file) {
  clearProblem();
  try {
    if (!file.name.toLowerCase().endsWith(".zip")) {
      throw new UploadRefused(`${file.name} is not a .zip file. Choose a .zip, or choose the project folder.`);
    }
    if (file.size === 0) throw new UploadRefused(`${file.name} is empty.`);
    checkSize(file.size, file.name);
    choice = { kind: "zip", file, label: file.name };
  } catch (error) {
    choice = null;
    showProblem("This file cannot be uploaded", error.message);
  }
  showChoice();
}

/** The folder holding code.py: "" for the root, "name/" for one top folder, null when missing. */
function projectRoot(paths) {
  if (paths.includes("code.py")) return "";
  const tops = new Set(paths.map((path) => path.split("/")[0]));
  if (tops.size === 1) {
    const [top] = tops;
    if (paths.includes(`${top}/code.py`)) return `${top}/`;
  }
  return null;
}

function chooseFolder(entries) {
  clearProblem();
  const files = entries.filter(({ path }) => !isSkipped(path));
  try {
    if (!files.length) throw new UploadRefused("The folder is empty.");
    const root = projectRoot(files.map(({ path }) => path));
    if (root === null) {
      throw new UploadRefused("There is no code.py at the top of the folder. NIAS runs code.py from the project folder.");
    }
    const size = files.reduce((sum, { file }) => sum + file.size, 0);
    const label = root || (files.length === 1 ? files[0].path : "project");
    choice = { kind: "folder", files, label, size };
  } catch (error) {
    choice = null;
    showProblem("This folder cannot be uploaded", error.message);
  }
  showChoice();
}

// Drag and drop, including whole folders

async function handleDrop(event) {
  event.preventDefault();
  byId("dropzone").classList.remove("dragging");
  if (currentUpload) return;
  const items = [...(event.dataTransfer.items || [])].filter((item) => item.kind === "file");
  const entries = items.map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  const plainFiles = [...event.dataTransfer.files];
  if (plainFiles.length === 1 && (!entries.length || entries[0].isFile)) {
    if (plainFiles[0].name.toLowerCase().endsWith(".zip")) return chooseZip(plainFiles[0]);
  }
  if (!entries.length) return chooseFolder(plainFiles.map((file) => ({ path: file.name, file })));
  const files = [];
  for (const entry of entries) await walkEntry(entry, "", files);
  chooseFolder(files);
}

// Sending

/** Every bad field at once: each is marked (aria-invalid) and named, with what it must be. */
class FieldProblems extends UploadRefused {
  constructor(problems) {
    super(problems.map(([, message]) => message).join(" "));
    this.problems = problems;
  }
}

const OPTION_FIELDS = ["job-name", "job-priority", "job-timeout", "job-params", "job-sweep"];

function markFields(problems) {
  const bad = new Map(problems);
  for (const id of OPTION_FIELDS) {
    const input = byId(id);
    if (bad.has(id)) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    const hint = byId(`${id}-error`);
    if (hint) hint.textContent = bad.get(id) || "";
  }
  if (problems.length) byId(problems[0][0]).focus();
}

function readOptions() {
  const options = {};
  const problems = [];
  const name = byId("job-name").value.trim();
  if (name.length > 200) problems.push(["job-name", "Name: at most 200 characters."]);
  else if (name) options.name = name;
  const priority = byId("job-priority").value.trim();
  if (priority !== "" && !/^\d$/.test(priority)) problems.push(["job-priority", "Priority: a whole number from 0 to 9."]);
  else if (priority !== "") options.priority = priority;
  const timeout = byId("job-timeout").value.trim();
  const most = limits ? limits.job_timeout_s : Infinity;
  if (timeout !== "" && (!/^\d+$/.test(timeout) || Number(timeout) < 1 || Number(timeout) > most)) {
    problems.push(["job-timeout", `Time limit: a whole number of seconds from 1 to ${most}.`]);
  } else if (timeout !== "") {
    options.timeout_s = timeout;
  }
  const pool = byId("job-pool").value;
  if (pool && pool !== "default") options.pool = pool;
  const datasets = chosenDatasets(byId("dataset-choice"));
  if (datasets.length) options.datasets = JSON.stringify(datasets);
  for (const [id, what, list] of [["job-params", "Parameters", false], ["job-sweep", "Sweep", true]]) {
    try {
      const value = readJsonField(byId(id), what, { list });
      if (value !== undefined) options[id === "job-params" ? "params" : "sweep"] = JSON.stringify(value);
    } catch (error) {
      problems.push([id, error.message]);
    }
  }
  markFields(problems);
  if (problems.length) throw new FieldProblems(problems);
  return options;
}

function setBusy(busy) {
  for (const control of form.querySelectorAll("input, button")) {
    if (control.id !== "cancel-upload") control.disabled = busy;
  }
  byId("cancel-upload").hidden = !busy;
  if (busy) byId("progress-block").hidden = false;
}

function setProgress(text, loaded, total) {
  byId("progress-text").textContent = text;
  if (total) {
    progress.max = total;
    progress.value = loaded;
    byId("progress-bytes").textContent = `${formatBytes(loaded)} of ${formatBytes(total)}`;
  } else {
    progress.removeAttribute("value");
    byId("progress-bytes").textContent = "";
  }
}

/** The accepted job, linked: the page opens it, and the link stays should the browser not. */
function showAccepted(job, size) {
  setProgress("", size, size);
  byId("progress-text").replaceChildren("Accepted as ",
    el("a", { href: jobUrl(job.id), id: "accepted-job" }, job.name || job.id), ". Opening the job…");
}

async function projectBlob() {
  if (choice.kind === "zip") return { blob: choice.file, filename: choice.file.name };
  setProgress("Zipping the folder…", 0, choice.files.length);
  const blob = await zipFiles(choice.files, {
    onProgress: (done, total) => setProgress(`Zipping the folder: ${done} of ${total} files`, done, total),
  });
  checkSize(blob.size, "The zipped folder");
  return { blob, filename: `${choice.label.replace(/\/$/, "") || "project"}.zip` };
}

function send(blob, filename, options, headers, { dryRun = false } = {}) {
  return new Promise((resolve, reject) => {
    const body = new FormData();
    body.append("file", blob, filename);
    for (const [key, value] of Object.entries(options)) body.append(key, value);
    const xhr = new XMLHttpRequest();
    currentUpload = xhr;
    xhr.open("POST", dryRun ? "/api/jobs?dry_run=true" : "/api/jobs");
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const share = event.loaded / event.total; // of the form's body: the zip and a few hundred bytes of fields
      setProgress(`Uploading… ${Math.floor(share * 100)} %`, Math.round(share * blob.size), blob.size);
    });
    xhr.upload.addEventListener("load", () => setProgress(dryRun
      ? "Uploaded. The server is compiling the code and resolving the requirements…"
      : "Uploaded. The server is checking the project…"));
    xhr.addEventListener("load", () => {
      if (xhr.status === 401) goToSignIn();
      if (xhr.status === (dryRun ? 200 : 201)) resolve(JSON.parse(xhr.responseText));
      else reject(errorFromBody(xhr.status, xhr.responseText, `The server answered ${xhr.status} ${xhr.statusText}.`));
    });
    xhr.addEventListener("error", () => reject(new UploadRefused(
      "The upload was interrupted before the server answered. Check the connection and try again.")));
    xhr.addEventListener("abort", () => reject(new UploadRefused("The upload was cancelled.")));
    xhr.send(body);
  });
}

/** The chosen project and options, or null after saying what is missing. */
function readyToSend() {
  clearProblem();
  if (!choice) {
    showProblem("Nothing to upload yet", "Choose a .zip file or a project folder first.");
    byId("choose-zip").focus();
    return null;
  }
  try {
    return readOptions();
  } catch (error) {
    const count = error.problems ? error.problems.length : 1;
    showProblem(count > 1 ? `Check these ${count} options` : "Check the options", error.message);
    return null;
  }
}

function showCheckReport(answer) {
  byId("progress-block").hidden = true;
  const report = byId("check-report");
  renderCheckReport(report, answer, choice.label);
  report.hidden = false;
  report.scrollIntoView({ block: "nearest" });
  report.focus({ preventScroll: true });
}

async function sendChoice({ dryRun }) {
  if (currentUpload) return;
  if (!limits) await limitsKnown; // a file chosen before they arrived has been checked against them since
  const options = readyToSend();
  if (!options) return;
  byId("check-report").hidden = true;
  setBusy(true);
  try {
    const headers = await csrfHeaders();
    const { blob, filename } = await projectBlob();
    const answer = await send(blob, filename, options, headers, { dryRun });
    if (dryRun) {
      showCheckReport(answer);
      return;
    }
    currentUpload = null; // the upload is over: opening the job must not ask "Leave site?"
    showAccepted(answer, blob.size);
    window.location.assign(answer.jobs ? sweepUrl(answer.id) : jobUrl(answer.id)); // a sweep has a page of its own
  } catch (error) {
    if (dryRun && error.status === 400) {
      showCheckReport(reportFromRefusal(error)); // the zip rules refused it before any other check
      return;
    }
    const refusedByServer = error.code && error.status;
    const field = error.details && { name: "job-name", priority: "job-priority", timeout_s: "job-timeout",
      params: "job-params", sweep: "job-sweep" }[error.details.field];
    if (field) markFields([[field, error.message]]);
    const title = dryRun ? "The project did not pass the check" : "The server refused this upload";
    showProblem(refusedByServer ? title : "The upload did not go through",
      error.message, refusedByServer ? error.code : null);
    byId("progress-block").hidden = true;
  } finally {
    currentUpload = null;
    setBusy(false);
    byId("cancel-upload").hidden = true;
  }
}

function upload(event) {
  event.preventDefault();
  sendChoice({ dryRun: false });
}

async function showLimits() {
  try {
    limits = await getLimits();
    if (choice && choice.kind === "zip") chooseZip(choice.file); // chosen before the limits were known
    byId("limit-hint").textContent = `Up to ${limits.max_upload_mb} MB, at most ${plural(limits.max_files, "file")} `
      + `and ${limits.max_unpacked_mb} MB unpacked.`;
    byId("job-timeout").max = limits.job_timeout_s;
    byId("timeout-hint").textContent = `Optional; at most ${limits.job_timeout_s} (${formatDuration(limits.job_timeout_s)}).`;
  } catch (error) {
    byId("limit-hint").textContent = "The server's limits are unavailable; it checks them when you upload.";
  }
}

function wire() {
  const zipInput = byId("zip-input");
  const folderInput = byId("folder-input");
  byId("choose-zip").addEventListener("click", () => zipInput.click());
  byId("choose-folder").addEventListener("click", () => folderInput.click());
  zipInput.addEventListener("change", () => zipInput.files.length && chooseZip(zipInput.files[0]));
  folderInput.addEventListener("change", () => folderInput.files.length
    && chooseFolder(filesFromFolderInput(folderInput.files)));
  byId("clear-choice").addEventListener("click", () => {
    choice = null;
    byId("check-report").hidden = true;
    zipInput.value = "";
    folderInput.value = "";
    showChoice();
    clearProblem();
    byId("choose-zip").focus();
  });
  byId("cancel-upload").addEventListener("click", () => currentUpload && currentUpload.abort());
  const zone = byId("dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", handleDrop);
  // A file dropped beside the zone must not replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  window.addEventListener("beforeunload", (event) => {
    if (currentUpload) event.preventDefault();
  });
  form.addEventListener("submit", upload);
  byId("check-button").addEventListener("click", () => sendChoice({ dryRun: true }));
}

wire();
limitsKnown = showLimits();
fillPoolChoice(byId("job-pool"));
fillDatasetChoice(byId("dataset-choice"), byId("datasets-field"));

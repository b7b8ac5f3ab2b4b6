// Data sets: the Upload page's choice of the data sets a job reads, and the Account page's list of
// them, with upload (a progress bar), delete and share.

import { csrfHeaders, errorFromBody, getJSON, getMe, goToSignIn, request, sendJSON } from "./api.js";
import { byId, el, showError } from "./dom.js";
import { formatAgo, formatBytes, formatFullTime } from "./format.js";

const datasetUrl = (name) => `/api/datasets/${encodeURIComponent(name)}`;

/** Upload page: one checkbox per data set the user can read (the field stays hidden when there is none). */
export async function fillDatasetChoice(container, field) {
  let datasets;
  let me;
  try {
    [{ datasets }, me] = await Promise.all([getJSON("/api/datasets"), getMe()]);
  } catch {
    return; // no choice offered; a job can still run without data sets
  }
  container.replaceChildren(...datasets.map((set) => el("label", { class: "check" },
    el("input", { type: "checkbox", name: "datasets", value: choiceValue(set, me.email) }),
    ` ${set.name} `, el("span", { class: "muted small" }, `${formatBytes(set.size)}${ownerNote(set, me.email)}`))));
  field.hidden = !datasets.length;
}

/** The names of the checked data sets, in the order listed. */
export function chosenDatasets(container) {
  return [...container.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
}

/** What a job names: my own data set by its name, a shared one as owner/name (never ambiguous). */
function choiceValue(set, email) {
  return set.owner && set.owner !== email ? `${set.owner}/${set.name}` : set.name;
}

function ownerNote(set, email) {
  return set.owner && set.owner !== email ? `, shared by ${set.owner}` : "";
}

// Account page

let myEmail = null;

function isMine(set) {
  return set.owner === myEmail;
}

function datasetRow(set) {
  const actions = [];
  if (isMine(set)) {
    const remove = el("button", { type: "button", class: "small", dataset: { action: "delete" },
      "aria-label": `Delete the data set ${set.name}` }, "Delete");
    remove.addEventListener("click", () => deleteDataset(set, remove));
    const email = el("input", { type: "email", class: "small", placeholder: "colleague@lab.example",
      autocomplete: "off", "aria-label": `E-mail to share ${set.name} with` });
    const share = el("button", { type: "button", class: "small", dataset: { action: "share" } }, "Share");
    share.addEventListener("click", () => shareDataset(set, email, share));
    actions.push(remove, " ", el("span", { class: "share-with" }, email, " ", share));
  }
  return el("tr", { dataset: { dataset: set.name } },
    el("td", { class: "primary" }, el("strong", {}, set.name),
      set.shared_with && set.shared_with.length
        ? el("div", { class: "muted small" }, `shared with ${set.shared_with.join(", ")}`) : null),
    el("td", { dataset: { label: "Owner" } }, isMine(set) ? el("span", { class: "muted" }, "you") : set.owner),
    el("td", { dataset: { label: "Size" }, class: "num" }, formatBytes(set.size)),
    el("td", { dataset: { label: "sha256" }, class: "mono" }, el("span", { title: set.sha256 }, set.sha256.slice(0, 12))),
    el("td", { dataset: { label: "Created" } },
      el("time", { datetime: set.created_at, title: formatFullTime(set.created_at) }, formatAgo(set.created_at))),
    el("td", { dataset: { label: "Jobs using" }, class: "num" }, String(set.jobs_using)),
    el("td", { dataset: { label: "" }, class: "num" }, ...actions));
}

async function showDatasets() {
  const { datasets } = await getJSON("/api/datasets");
  byId("datasets-table").tBodies[0].replaceChildren(...(datasets.length ? datasets.map(datasetRow)
    : [el("tr", {}, el("td", { class: "empty", colspan: 7 }, "No data sets yet."))]));
}

async function deleteDataset(set, button) {
  if (!window.confirm(`Delete the data set "${set.name}"? Jobs can no longer name it.`)) return;
  showError(byId("datasets-error"), null);
  button.disabled = true;
  try {
    await request(datasetUrl(set.name), { method: "DELETE" });
    await showDatasets();
  } catch (error) {
    button.disabled = false;
    showError(byId("datasets-error"), error, `The data set ${set.name} was not deleted`);
  }
}

async function shareDataset(set, email, button) {
  showError(byId("datasets-error"), null);
  if (!email.value.trim()) {
    email.focus();
    showError(byId("datasets-error"), new Error("Give the e-mail of the user to share it with."),
      `The data set ${set.name} was not shared`);
    return;
  }
  button.disabled = true;
  try {
    await sendJSON(`${datasetUrl(set.name)}/share`, "POST", { email: email.value.trim() });
    await showDatasets();
  } catch (error) {
    button.disabled = false;
    showError(byId("datasets-error"), error, `The data set ${set.name} was not shared`);
  }
}

function setUploadBusy(busy) {
  for (const control of byId("dataset-form").querySelectorAll("input, button")) control.disabled = busy;
  byId("dataset-progress-block").hidden = !busy;
}

/** Send the name and file as multipart, showing the upload's progress. */
function sendDataset(name, file, headers) {
  return new Promise((resolve, reject) => {
    const body = new FormData();
    body.append("name", name);
    body.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/datasets");
    xhr.setRequestHeader("Accept", "application/json");
    for (const [header, value] of Object.entries(headers)) xhr.setRequestHeader(header, value);
    const progress = byId("dataset-progress");
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      progress.max = event.total;
      progress.value = event.loaded;
      byId("dataset-progress-text").textContent = `Uploading… ${Math.floor((event.loaded / event.total) * 100)} %`;
    });
    xhr.upload.addEventListener("load", () => {
      byId("dataset-progress-text").textContent = "Uploaded. The server is storing it…";
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 401) goToSignIn();
      if (xhr.status === 201) resolve(JSON.parse(xhr.responseText));
      else reject(errorFromBody(xhr.status, xhr.responseText, `The server answered ${xhr.status} ${xhr.statusText}.`));
    });
    xhr.addEventListener("error", () => reject(new Error(
      "The upload was interrupted before the server answered. Check the connection and try again.")));
    xhr.send(body);
  });
}

async function uploadDataset(event) {
  event.preventDefault();
  showError(byId("datasets-error"), null);
  const name = byId("dataset-name").value.trim();
  const file = byId("dataset-file").files[0];
  if (!name || !file) {
    showError(byId("datasets-error"), new Error("Give the data set a name and choose its file."),
      "Nothing to upload yet");
    byId(name ? "dataset-file" : "dataset-name").focus();
    return;
  }
  byId("dataset-progress-text").textContent = "Starting…";
  const headers = await csrfHeaders();
  setUploadBusy(true);
  try {
    await sendDataset(name, file, headers);
    byId("dataset-form").reset();
    await showDatasets();
  } catch (error) {
    showError(byId("datasets-error"), error, "The data set was not uploaded");
  } finally {
    setUploadBusy(false);
  }
}

/** Account page: list the data sets and wire the upload form. */
export async function wireDatasets(me) {
  myEmail = me.email;
  byId("dataset-form").addEventListener("submit", uploadDataset);
  byId("upload-dataset").disabled = false; // wired: a click before would submit the form to the page itself
  try {
    await showDatasets();
  } catch (error) {
    showError(byId("datasets-error"), error, "Your data sets cannot be listed");
  }
}

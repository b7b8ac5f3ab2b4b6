// Upload page, "Run a command": pick one of the server's commands, read what it does, fill in a
// form drawn from its parameters and queue it (or a sweep of it).

import { getJSON, jobUrl, sendJSON } from "./api.js";
import { byId, el, showError } from "./dom.js";
import { readJsonField, sweepUrl } from "./params-fields.js";

const form = byId("command-form");
const select = byId("command-select");
const errorBox = byId("command-error");
let commands = [];

function inputFor(parameter) {
  const id = `param-${parameter.name}`;
  const described = parameter.help ? `${id}-hint` : null;
  const common = { id, name: parameter.name, "aria-describedby": described, required: parameter.required };
  if (parameter.type === "choice") {
    return el("select", common, parameter.choices.map((choice) => el("option", {
      value: JSON.stringify(choice), selected: choice === parameter.default }, String(choice))));
  }
  if (parameter.type === "bool") {
    return el("input", { ...common, type: "checkbox", checked: parameter.default === true });
  }
  if (parameter.type === "int" || parameter.type === "float") {
    return el("input", { ...common, type: "number", inputmode: parameter.type === "int" ? "numeric" : "decimal",
      step: parameter.type === "int" ? "1" : "any", min: parameter.min, max: parameter.max,
      value: parameter.default });
  }
  return el("input", { ...common, type: "text", autocomplete: "off", value: parameter.default });
}

function bounds(parameter) {
  const parts = [];
  if (parameter.min !== undefined) parts.push(`from ${parameter.min}`);
  if (parameter.max !== undefined) parts.push(`to ${parameter.max}`);
  if (parameter.required) parts.push("required");
  return parts.length ? ` (${parts.join(" ")})` : "";
}

function fieldFor(parameter) {
  const input = inputFor(parameter);
  const label = el("label", { for: input.id }, `${parameter.name}${bounds(parameter)}`);
  const hint = parameter.help ? el("span", { class: "hint", id: `${input.id}-hint` }, parameter.help) : null;
  if (parameter.type === "bool") {
    return el("div", { class: "field check-field", dataset: { param: parameter.name } },
      el("label", { class: "check" }, input, ` ${parameter.name}`), hint);
  }
  return el("div", { class: "field", dataset: { param: parameter.name } }, label, input, hint);
}

function chosen() {
  return commands.find((command) => command.name === select.value) || null;
}

function showCommand() {
  const command = chosen();
  byId("command-description").textContent = command ? command.description || command.title : "";
  byId("command-params").replaceChildren(...(command ? command.parameters.map(fieldFor) : []));
  byId("command-job-name").placeholder = command ? command.name : "";
}

/** The form's values, typed as the command declares; a field left empty is left out (its default applies). */
function readParams(command) {
  const params = {};
  for (const parameter of command.parameters) {
    const input = byId(`param-${parameter.name}`);
    if (parameter.type === "bool") params[parameter.name] = input.checked;
    else if (parameter.type === "choice") params[parameter.name] = JSON.parse(input.value);
    else if (input.value.trim() === "") continue;
    else if (parameter.type === "int" || parameter.type === "float") {
      const number = Number(input.value);
      if (!Number.isFinite(number)) throw new Error(`Parameter '${parameter.name}' must be a number.`);
      params[parameter.name] = number;
    } else params[parameter.name] = input.value;
  }
  return params;
}

async function run(event) {
  event.preventDefault();
  showError(errorBox, null);
  const command = chosen();
  if (!command) {
    showError(errorBox, new Error("Choose a command first."), "Nothing to run yet");
    return;
  }
  const button = byId("command-run");
  button.disabled = true;
  try {
    const body = { params: readParams(command) };
    const sweep = readJsonField(byId("command-sweep"), "Sweep", { list: true });
    if (sweep !== undefined) body.sweep = sweep;
    const name = byId("command-job-name").value.trim();
    if (name) body.name = name;
    const priority = byId("command-priority").value.trim();
    if (priority !== "") body.priority = Number(priority);
    const answer = await sendJSON(`/api/commands/${encodeURIComponent(command.name)}/jobs`, "POST", body);
    window.location.assign(answer.jobs ? sweepUrl(answer.id) : jobUrl(answer.id));
  } catch (error) {
    showError(errorBox, error, error.status ? "The server refused this job" : "Check the form");
    const param = error.details && error.details.param;
    const field = param && form.querySelector(`[data-param="${CSS.escape(param)}"] input, `
      + `[data-param="${CSS.escape(param)}"] select`);
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  } finally {
    button.disabled = false;
  }
}

function showMode() {
  const mode = document.querySelector('input[name="mode"]:checked').value;
  form.hidden = mode !== "command";
  byId("upload-form").hidden = mode === "command";
}

/** For admins: the command folders that cannot be used, and why (users never see them). */
function showBroken(broken) {
  const box = byId("command-broken");
  box.hidden = !broken || broken.length === 0;
  if (box.hidden) return;
  box.replaceChildren(el("strong", {}, `Broken commands (only admins see this): ${broken.length}`),
    el("ul", {}, broken.map((item) => el("li", {}, el("code", {}, item.folder), `: ${item.reason}`))));
}

async function load() {
  try {
    const listing = await getJSON("/api/commands");
    commands = listing.commands;
    showBroken(listing.broken);
  } catch (error) {
    showError(errorBox, error, "The commands could not be listed");
    return;
  }
  select.replaceChildren(
    el("option", { value: "" }, commands.length ? "Choose a command…" : "This server has no commands"),
    ...commands.map((command) => el("option", { value: command.name }, `${command.title} (${command.name})`)));
  const wanted = new URLSearchParams(window.location.search).get("command");
  if (wanted && commands.some((command) => command.name === wanted)) {
    select.value = wanted;
    document.querySelector('input[name="mode"][value="command"]').checked = true;
    showMode();
  }
  showCommand();
}

for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", showMode);
select.addEventListener("change", showCommand);
form.addEventListener("submit", run);
load();

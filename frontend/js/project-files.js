// The files of a project folder, chosen with a folder picker or dropped, less what never belongs in a job.

export const SKIPPED_NAMES = new Set([".git", "__pycache__", ".venv", ".ipynb_checkpoints", ".mypy_cache",
  ".pytest_cache", ".DS_Store", "Thumbs.db", "__MACOSX"]);

export function isSkipped(path) {
  return path.split("/").some((part) => SKIPPED_NAMES.has(part));
}

export function filesFromFolderInput(fileList) {
  return [...fileList].map((file) => ({ path: file.webkitRelativePath || file.name, file }));
}

function readAllEntries(reader) {
  return new Promise((resolve, reject) => {
    const all = [];
    const next = () => reader.readEntries((batch) => {
      if (!batch.length) resolve(all);
      else { all.push(...batch); next(); }
    }, reject);
    next();
  });
}

/** Add the files under a dropped entry to `out` as {path, file}. */
export async function walkEntry(entry, prefix, out) {
  const path = `${prefix}${entry.name}`;
  if (SKIPPED_NAMES.has(entry.name)) return;
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ path, file });
  } else if (entry.isDirectory) {
    for (const child of await readAllEntries(entry.createReader())) await walkEntry(child, `${path}/`, out);
  }
}

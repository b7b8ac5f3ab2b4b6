// Reading CSV and TSV for previews: quoted fields, doubled quotes and newlines inside quotes.

/** Rows of `text` split on `delimiter`, at most `maxRows` of them. */
export function parseDelimited(text, { delimiter = ",", maxRows = Infinity } = {}) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  let i = 0;
  const endRow = () => {
    row.push(field);
    rows.push(row);
    row = [];
    field = "";
  };
  while (i < text.length && rows.length < maxRows) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i += 2; continue; }
      if (ch === '"') quoted = false;
      else field += ch;
      i += 1;
      continue;
    }
    if (ch === '"' && field === "") quoted = true;
    else if (ch === delimiter) { row.push(field); field = ""; }
    else if (ch === "\n") endRow();
    else if (ch === "\r") { endRow(); if (text[i + 1] === "\n") i += 1; }
    else field += ch;
    i += 1;
  }
  if (rows.length < maxRows && (field !== "" || row.length)) endRow();
  return rows;
}

/** What is left of a cut-off file once its last, possibly partial, line is dropped. */
export function wholeLines(text) {
  const end = Math.max(text.lastIndexOf("\n"), text.lastIndexOf("\r"));
  return end < 0 ? "" : text.slice(0, end + 1);
}

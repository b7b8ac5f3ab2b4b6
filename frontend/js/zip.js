// Zipping a project folder in the browser: a small ZIP writer (deflate through the browser's own
// CompressionStream when it has one, stored otherwise). No ZIP64, so at most 65,535 files and 4 GB.

const MAX_ENTRIES = 0xffff;
const MAX_BYTES = 0xffffffff;
const UTF8_FLAG = 0x0800;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i += 1) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function dosDateTime(milliseconds) {
  const date = new Date(milliseconds || Date.now());
  const year = Math.max(date.getFullYear(), 1980);
  const time = (date.getHours() << 11) | (date.getMinutes() << 5) | (date.getSeconds() >> 1);
  const day = ((year - 1980) << 9) | ((date.getMonth() + 1) << 5) | date.getDate();
  return { time, day };
}

async function deflateRaw(bytes) {
  if (typeof CompressionStream === "undefined") return null;
  try {
    const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate-raw"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  } catch (_) {
    return null;
  }
}

function header(size) {
  const buffer = new ArrayBuffer(size);
  return { bytes: new Uint8Array(buffer), view: new DataView(buffer) };
}

function localHeader(entry) {
  const { bytes, view } = header(30 + entry.name.length);
  view.setUint32(0, 0x04034b50, true);
  view.setUint16(4, 20, true);
  view.setUint16(6, UTF8_FLAG, true);
  view.setUint16(8, entry.method, true);
  view.setUint16(10, entry.time, true);
  view.setUint16(12, entry.day, true);
  view.setUint32(14, entry.crc, true);
  view.setUint32(18, entry.compressedSize, true);
  view.setUint32(22, entry.size, true);
  view.setUint16(26, entry.name.length, true);
  bytes.set(entry.name, 30);
  return bytes;
}

function centralHeader(entry) {
  const { bytes, view } = header(46 + entry.name.length);
  view.setUint32(0, 0x02014b50, true);
  view.setUint16(4, (3 << 8) | 20, true); // made by Unix, so the permissions below are read
  view.setUint16(6, 20, true);
  view.setUint16(8, UTF8_FLAG, true);
  view.setUint16(10, entry.method, true);
  view.setUint16(12, entry.time, true);
  view.setUint16(14, entry.day, true);
  view.setUint32(16, entry.crc, true);
  view.setUint32(20, entry.compressedSize, true);
  view.setUint32(24, entry.size, true);
  view.setUint16(28, entry.name.length, true);
  view.setUint32(38, (0o100644 << 16) >>> 0, true); // a regular file, rw-r--r--
  view.setUint32(42, entry.offset, true);
  bytes.set(entry.name, 46);
  return bytes;
}

function endOfCentralDirectory(count, size, offset) {
  const { bytes, view } = header(22);
  view.setUint32(0, 0x06054b50, true);
  view.setUint16(8, count, true);
  view.setUint16(10, count, true);
  view.setUint32(12, size, true);
  view.setUint32(16, offset, true);
  return bytes;
}

/**
 * Zip `files` ([{path, file}], `path` relative with "/" separators) into a Blob.
 * `onProgress(done, total)` is called after each file.
 */
export async function zipFiles(files, { onProgress = () => {} } = {}) {
  if (files.length > MAX_ENTRIES) throw new Error(`A folder of more than ${MAX_ENTRIES} files cannot be zipped here.`);
  const encoder = new TextEncoder();
  const parts = [];
  const entries = [];
  let offset = 0;
  for (const [index, { path, file }] of files.entries()) {
    const data = new Uint8Array(await file.arrayBuffer());
    const deflated = await deflateRaw(data);
    const useDeflate = deflated !== null && deflated.length < data.length;
    const stored = useDeflate ? deflated : data;
    const entry = {
      name: encoder.encode(path),
      method: useDeflate ? 8 : 0,
      crc: crc32(data),
      size: data.length,
      compressedSize: stored.length,
      offset,
      ...dosDateTime(file.lastModified),
    };
    const local = localHeader(entry);
    parts.push(local, stored);
    offset += local.length + stored.length;
    if (offset > MAX_BYTES) throw new Error("The folder is too large to zip in the browser; zip it yourself.");
    entries.push(entry);
    onProgress(index + 1, files.length);
  }
  const central = entries.map(centralHeader);
  const centralSize = central.reduce((sum, part) => sum + part.length, 0);
  parts.push(...central, endOfCentralDirectory(entries.length, centralSize, offset));
  return new Blob(parts, { type: "application/zip" });
}

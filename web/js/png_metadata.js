// Text chunks of a PNG (tEXt, and uncompressed iTXt), where ComfyUI-style tools store the
// `workflow` (UI JSON) and `prompt` (API JSON) of the image.

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function textChunk(type, bytes) {
  const zero = bytes.indexOf(0);
  if (zero < 0) return null;
  const keyword = new TextDecoder("latin1").decode(bytes.subarray(0, zero));
  if (type === "tEXt") return [keyword, new TextDecoder("latin1").decode(bytes.subarray(zero + 1))];
  // iTXt: keyword \0 compressed? method language \0 translated keyword \0 text (UTF-8)
  if (bytes[zero + 1] !== 0) return null;
  let at = bytes.indexOf(0, zero + 3);
  at = bytes.indexOf(0, at + 1);
  return at < 0 ? null : [keyword, new TextDecoder("utf-8").decode(bytes.subarray(at + 1))];
}

/** {keyword: text} of a PNG's text chunks; {} when the bytes are not a PNG. */
export function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (!SIGNATURE.every((b, i) => bytes[i] === b)) return {};
  const view = new DataView(buffer);
  const found = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === "tEXt" || type === "iTXt") {
      const entry = textChunk(type, data);
      if (entry) found[entry[0]] = entry[1];
    }
    if (type === "IEND") break;
    offset += 12 + length;
  }
  return found;
}

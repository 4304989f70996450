// RFC 8785 (JCS) canonical JSON. JCS is defined in terms of ECMAScript's own
// JSON.stringify for strings and numbers, so only key order (UTF-16 code units,
// which is what Array.prototype.sort compares) and whitespace need care.
export function canonicalize(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError("JCS: numbers must be finite");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalize).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalize((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(",")}}`;
  }
  throw new TypeError(`JCS: cannot serialise a ${typeof value}`);
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function canonicalBytes(value: unknown): Uint8Array {
  return utf8.encode(canonicalize(value));
}

/** Parse UTF-8 JSON bytes (throws on invalid UTF-8 or JSON). */
export function parseJson(body: Uint8Array): unknown {
  return JSON.parse(strictUtf8.decode(body));
}

/** True when `body` is JSON already in RFC 8785 canonical form. */
export function isCanonical(body: Uint8Array): boolean {
  try {
    return Buffer.from(canonicalBytes(parseJson(body))).equals(Buffer.from(body));
  } catch {
    return false;
  }
}

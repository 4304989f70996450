// The DSAR export's AES-256-GCM envelope (docs/DSAR.md), decrypted exactly as
// clients/python/kaireon_client/envelope.py does:
//   data.ciphertext = base64(nonce[12] || ciphertext || tag[16]),
//   AAD = RFC 8785 JSON of {keyVersion, requestId, tenantId},
//   keys configured as "v1:<base64 32 bytes>,v2:…" (standard or URL-safe base64).
import { createDecipheriv } from "node:crypto";
import { canonicalBytes, parseJson } from "./canonical.js";

export const FORMAT = "encrypted-aes-256-gcm";
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const VERSION = /^[A-Za-z0-9._-]{1,32}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class EnvelopeError extends Error {
  override name = "EnvelopeError";
}

/** The GCM tag did not verify: tampered bytes, wrong key, or another tenant's/request's envelope. */
export class AuthenticationFailed extends EnvelopeError {
  override name = "AuthenticationFailed";
}

export interface KeyRing {
  keys: ReadonlyMap<string, Buffer>;
  active: string;
}

function decodeKey(version: string, encoded: string): Buffer {
  const text = encoded.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(text) || text.length % 4 === 1) {
    throw new EnvelopeError(`encryption key '${version}' is not valid base64`);
  }
  const raw = Buffer.from(text, "base64");
  if (raw.length !== KEY_BYTES) throw new EnvelopeError(`encryption key '${version}' must be ${KEY_BYTES} bytes, not ${raw.length}`);
  return raw;
}

/** Parse "v1:<base64>,v2:<base64>" (KAIREON_ENCRYPTION_KEYS); the active key is `active` or the last listed. */
export function parseKeyRing(spec: string, active?: string): KeyRing {
  const keys = new Map<string, Buffer>();
  const order: string[] = [];
  spec.split(",").forEach((raw, position) => {
    const item = raw.trim();
    if (!item) return;
    const colon = item.indexOf(":");
    const version = colon < 0 ? "" : item.slice(0, colon).trim();
    if (colon < 0 || !VERSION.test(version)) {
      throw new EnvelopeError(
        `encryption key #${position + 1}: expected '<version>:<base64 key>' with a version of 1-32 characters [A-Za-z0-9._-]`,
      );
    }
    if (keys.has(version)) throw new EnvelopeError(`encryption key version '${version}' is listed twice`);
    keys.set(version, decodeKey(version, item.slice(colon + 1).trim()));
    order.push(version);
  });
  if (!keys.size) throw new EnvelopeError("no encryption keys configured");
  const chosen = (active ?? "").trim() || (order[order.length - 1] as string);
  if (!keys.has(chosen)) throw new EnvelopeError(`active encryption key version '${chosen}' is not configured`);
  return { keys, active: chosen };
}

export function associatedData(tenantId: string, requestId: string, keyVersion: string): Uint8Array {
  return canonicalBytes({ keyVersion, requestId, tenantId });
}

export interface EnvelopeInfo {
  keyVersion: string;
  tenantId: string;
  requestId: string;
  exportedAt: string;
}

function info(document: Record<string, unknown>): EnvelopeInfo {
  const data = document["data"];
  if (document["encrypted"] !== true || typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new EnvelopeError("not an encrypted envelope (expected encrypted: true and data)");
  }
  const d = data as Record<string, unknown>;
  if (d["format"] !== FORMAT) throw new EnvelopeError(`unsupported envelope format ${JSON.stringify(d["format"])}`);
  const fields = {
    keyVersion: d["keyVersion"],
    tenantId: d["tenantId"],
    requestId: document["requestId"],
    exportedAt: document["exportedAt"] ?? "",
  };
  for (const [name, value] of Object.entries(fields)) {
    if (typeof value !== "string" || (!value && name !== "exportedAt")) {
      throw new EnvelopeError(`envelope field ${name} is missing or not a string`);
    }
  }
  return fields as EnvelopeInfo;
}

const AUTH_MESSAGE =
  "authentication failed: the envelope was modified, belongs to another tenant or request, or the key for its version is wrong";

/**
 * The plaintext export (canonical JSON bytes) of an envelope, given as bytes or parsed JSON.
 * `tenantId` / `requestId`, when given, replace the envelope's own bindings, so an
 * envelope moved to another tenant or request fails authentication.
 */
export function decryptEnvelope(
  envelope: Uint8Array | Record<string, unknown>,
  keyring: KeyRing,
  expected: { tenantId?: string; requestId?: string } = {},
): { plaintext: Buffer; info: EnvelopeInfo } {
  let document: unknown;
  if (envelope instanceof Uint8Array) {
    try {
      document = parseJson(envelope);
    } catch {
      throw new EnvelopeError("not an encrypted envelope (invalid JSON)");
    }
  } else document = envelope;
  if (typeof document !== "object" || document === null || Array.isArray(document)) {
    throw new EnvelopeError("not an encrypted envelope (expected a JSON object)");
  }
  const meta = info(document as Record<string, unknown>);
  const text = ((document as Record<string, unknown>)["data"] as Record<string, unknown>)["ciphertext"];
  if (typeof text !== "string") throw new EnvelopeError("ciphertext is missing or not a string");
  if (text.length % 4 !== 0 || !BASE64.test(text)) throw new EnvelopeError("ciphertext is not valid base64");
  const blob = Buffer.from(text, "base64");
  if (blob.length < NONCE_BYTES + TAG_BYTES) throw new EnvelopeError("ciphertext is too short");
  const key = keyring.keys.get(meta.keyVersion);
  if (!key) {
    throw new EnvelopeError(
      `key version '${meta.keyVersion}' is not in the key ring (configured: ${[...keyring.keys.keys()].sort().join(", ")})`,
    );
  }
  const decipher = createDecipheriv("aes-256-gcm", key, blob.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES });
  decipher.setAAD(associatedData(expected.tenantId || meta.tenantId, expected.requestId || meta.requestId, meta.keyVersion));
  decipher.setAuthTag(blob.subarray(blob.length - TAG_BYTES));
  const head = decipher.update(blob.subarray(NONCE_BYTES, blob.length - TAG_BYTES));
  try {
    return { plaintext: Buffer.concat([head, decipher.final()]), info: meta };
  } catch {
    throw new AuthenticationFailed(AUTH_MESSAGE);
  }
}

// Offline verification of signed canonical JSON, as clients/python/kaireon_client/verify.py
// and kaireon_client/receipt.py: provenance bundles, DSAR export packages,
// erasure receipts. Only node:crypto; the public key comes from the operator
// (or ProvenanceService.GetSigningKey), never from the artefact.
import { createHash, createPublicKey, timingSafeEqual, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { canonicalBytes, canonicalize, isCanonical, parseJson } from "./canonical.js";

export { isCanonical } from "./canonical.js";

export const UNSIGNED = "unsigned";
export const BUNDLE_SCHEMA = "kaireon.provenance.v1";
export const RECEIPT_TYPE = "kaireon.erasure.receipt.v1";
export const RECEIPT_ALGORITHM = "ecdsa-p256-sha256";

const HEX64 = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface Report {
  ok: boolean;
  checks: Check[];
}

function report(checks: Check[]): Report {
  return { ok: checks.length > 0 && checks.every((c) => c.ok), checks };
}

type Bytes = Uint8Array | string;

function bytes(body: Bytes): Buffer {
  return typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

export function sha256Hex(body: Bytes): string {
  return createHash("sha256").update(bytes(body)).digest("hex");
}

/** True when `expectedHex` is the sha256 of `body` (case-insensitive hex). */
export function verifyDigest(body: Bytes, expectedHex: string): boolean {
  const expected = Buffer.from(expectedHex.trim().toLowerCase(), "utf8");
  const actual = Buffer.from(sha256Hex(body), "utf8");
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** The P-256 public key in `pem`; throws for any other key type or curve. */
export function loadP256PublicKey(pem: string | Buffer): KeyObject {
  const key = createPublicKey(pem);
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new TypeError("the public key must be an ECDSA P-256 key");
  }
  return key;
}

/** sha256 hex of the DER SubjectPublicKeyInfo: the server's key id. */
export function keyId(pem: string | Buffer): string {
  return sha256Hex(loadP256PublicKey(pem).export({ type: "spki", format: "der" }));
}

/** True when `signatureB64` (base64 DER, as cosign sign-blob) is an ECDSA P-256 / SHA-256 signature of `body`. */
export function verifySignature(body: Bytes, signatureB64: string, publicKeyPem: string | Buffer): boolean {
  const text = signatureB64.trim();
  if (text === UNSIGNED || text === "" || text.length % 4 !== 0 || !BASE64.test(text)) return false;
  let key: KeyObject;
  try {
    key = loadP256PublicKey(publicKeyPem);
  } catch {
    return false;
  }
  try {
    return cryptoVerify("sha256", bytes(body), { key, dsaEncoding: "der" }, Buffer.from(text, "base64"));
  } catch {
    return false; // malformed DER
  }
}

export interface VerifyOptions {
  digest?: string;
  signature?: string;
  publicKeyPem?: string | Buffer;
  /** Accept an "unsigned" artefact (a server without COSIGN_KEY). Refuse it in compliance use. */
  allowUnsigned?: boolean;
}

function signatureCheck(body: Bytes, o: VerifyOptions): Check | undefined {
  if (o.signature === undefined && o.publicKeyPem === undefined) return undefined;
  if (o.signature === undefined) return { name: "signature", ok: false, detail: "a public key was given but no signature" };
  if (o.signature.trim() === UNSIGNED) {
    return o.allowUnsigned
      ? { name: "signature", ok: true, detail: 'artifact is "unsigned" (accepted on request)' }
      : { name: "signature", ok: false, detail: 'artifact is "unsigned": refuse it in compliance use' };
  }
  if (o.publicKeyPem === undefined) return { name: "signature", ok: false, detail: "a signature was given but no public key" };
  const ok = verifySignature(body, o.signature, o.publicKeyPem);
  return { name: "signature", ok, detail: ok ? "ECDSA P-256 SHA-256 signature verifies" : "signature does not verify" };
}

/** Digest, signature and canonical form of any signed canonical JSON artefact (e.g. a DSAR export package). */
export function verifyArtifact(body: Bytes, options: VerifyOptions = {}): Report {
  const checks: Check[] = [];
  if (options.digest !== undefined) {
    const ok = verifyDigest(body, options.digest);
    const actual = sha256Hex(body);
    checks.push({ name: "digest", ok, detail: `sha256 ${actual}` + (ok ? "" : ` != expected ${options.digest}`) });
  }
  const sig = signatureCheck(body, options);
  if (sig) checks.push(sig);
  const canonical = isCanonical(bytes(body));
  checks.push({
    name: "canonical",
    ok: canonical,
    detail: canonical ? "RFC 8785 canonical JSON" : "not RFC 8785 canonical JSON",
  });
  return report(checks);
}

export interface AuditLinks {
  ok: boolean;
  entries: number;
  linksChecked: number;
  gaps: number;
  problems: string[];
}

type Entry = Record<string, unknown>;

function entryProblems(index: number, entry: unknown): string[] {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) return [`entry ${index}: not an object`];
  const e = entry as Entry;
  const problems: string[] = [];
  for (const name of ["id", "action", "timestamp"]) {
    if (typeof e[name] !== "string" || e[name] === "") problems.push(`entry ${index}: ${name} missing`);
  }
  const seq = e["seq"];
  if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 1) problems.push(`entry ${index}: seq must be a positive integer`);
  if (typeof e["integrityHash"] !== "string" || !HEX64.test(e["integrityHash"])) {
    problems.push(`entry ${index}: integrityHash is not 64 hex digits`);
  }
  const prev = e["prevHash"];
  const genesis = seq === 1 && prev === "";
  if (!genesis && (typeof prev !== "string" || !HEX64.test(prev))) problems.push(`entry ${index}: prevHash is not 64 hex digits`);
  return problems;
}

/** Check an audit-chain excerpt (a bundle's auditLog): see verify.py for what that covers. */
export function verifyAuditLinks(entries: readonly unknown[]): AuditLinks {
  const problems = entries.flatMap((e, i) => entryProblems(i, e));
  if (problems.length) return { ok: false, entries: entries.length, linksChecked: 0, gaps: 0, problems };
  const seen = new Set<string>();
  let links = 0;
  let gaps = 0;
  const list = entries as Entry[];
  list.forEach((entry, index) => {
    const hash = entry["integrityHash"] as string;
    if (seen.has(hash)) problems.push(`entry ${index}: integrityHash repeats an earlier entry`);
    seen.add(hash);
    if (index === 0) return;
    const before = list[index - 1] as Entry;
    const seq = entry["seq"] as number;
    const prevSeq = before["seq"] as number;
    if (seq <= prevSeq) problems.push(`entry ${index}: seq ${seq} does not follow ${prevSeq}`);
    else if (seq === prevSeq + 1) {
      links++;
      if (entry["prevHash"] !== before["integrityHash"]) {
        problems.push(`entry ${index}: prevHash does not match the integrityHash of seq ${prevSeq}`);
      }
    } else gaps++;
  });
  return { ok: problems.length === 0, entries: entries.length, linksChecked: links, gaps, problems };
}

/** verifyArtifact plus the bundle's schemaVersion and its auditLog links. */
export function verifyBundle(body: Bytes, options: VerifyOptions = {}): Report {
  const checks = verifyArtifact(body, options).checks;
  let bundle: unknown;
  try {
    bundle = parseJson(bytes(body));
  } catch {
    return report([...checks, { name: "schema", ok: false, detail: "body is not JSON" }]);
  }
  const doc = typeof bundle === "object" && bundle !== null && !Array.isArray(bundle) ? (bundle as Entry) : {};
  const schema = doc["schemaVersion"];
  checks.push({ name: "schema", ok: schema === BUNDLE_SCHEMA, detail: `schemaVersion ${JSON.stringify(schema)}` });
  const entries = doc["auditLog"];
  if (!Array.isArray(entries)) {
    checks.push({ name: "audit-links", ok: false, detail: "auditLog missing" });
    return report(checks);
  }
  const links = verifyAuditLinks(entries);
  let detail = `${links.entries} entries, ${links.linksChecked} neighbour links verified, ${links.gaps} gaps (not linkable offline)`;
  if (links.problems.length) detail += "; " + links.problems.join("; ");
  checks.push({ name: "audit-links", ok: links.ok, detail });
  return report(checks);
}

/** The receipt of an EraseCustomerResponse (generated message or its JSON). */
export interface ReceiptLike {
  canonicalPayload: string;
  digestSha256: string;
  signature: string;
  keyId: string;
}

/** Response fields the receipt signs (generated message or protojson). */
export interface ErasureResponseLike {
  customerId: string;
  deletedCounts?: object | undefined;
  totalDeleted: number | string;
  skippedTables: readonly string[];
  receipt?: ReceiptLike | undefined;
}

function counts(value: unknown): Record<string, number> {
  if (typeof value !== "object" || value === null) return {};
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === "$typeName" || k === "$unknown") continue; // protobuf-es message bookkeeping
    if (typeof v === "number" || typeof v === "string") out[k] = Number(v);
  }
  return out;
}

function sameCounts(a: Record<string, number>, b: Record<string, number>): boolean {
  // proto3 omits zero counts in JSON; compare the non-zero ones.
  const nz = (c: Record<string, number>): string =>
    canonicalize(Object.fromEntries(Object.entries(c).filter(([, v]) => v !== 0)));
  return nz(a) === nz(b);
}

/**
 * Problems with an erasure receipt (empty = valid), as kaireon_client/receipt.py (`kaireon verify receipt`):
 * canonical payload, digest, key id, signature and — given the whole response —
 * that the response's counts and tables equal the signed ones.
 */
// The processors an erasure was passed on to (GDPR Art. 19), in the signed
// payload when there are any: the same checks as kaireon_client/receipt.py.
const RECIPIENT_FIELDS = ["eventId", "name", "processorId", "state"];

function recipientProblems(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) return ["payload recipients is not a non-empty list"];
  for (const item of value) {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      return [`a payload recipient is not an object of ${RECIPIENT_FIELDS.join(", ")}`];
    }
    const entry = item as Record<string, unknown>;
    if (JSON.stringify(Object.keys(entry).sort()) !== JSON.stringify(RECIPIENT_FIELDS)) {
      return [`a payload recipient is not an object of ${RECIPIENT_FIELDS.join(", ")}`];
    }
    if (!RECIPIENT_FIELDS.every((k) => typeof entry[k] === "string" && entry[k] !== "")) {
      return ["a payload recipient has an empty or non-text field"];
    }
    if (entry["state"] !== "queued") return ["a payload recipient's state is not one of queued"];
  }
  const ids = new Set(value.map((item) => (item as Record<string, unknown>)["eventId"]));
  return ids.size === value.length ? [] : ["payload recipients repeat an eventId"];
}

export function verifyErasureReceipt(
  receiptOrResponse: ReceiptLike | ErasureResponseLike,
  publicKeyPem: string | Buffer | undefined,
  options: { allowUnsigned?: boolean } = {},
): { problems: string[]; payload: Record<string, unknown> } {
  const response = "receipt" in receiptOrResponse ? receiptOrResponse : undefined;
  const receipt = response ? response.receipt : (receiptOrResponse as ReceiptLike);
  if (!receipt || !receipt.canonicalPayload) return { problems: ["the receipt has no canonicalPayload"], payload: {} };
  const data = Buffer.from(receipt.canonicalPayload, "utf8");
  let parsed: unknown;
  try {
    parsed = parseJson(data);
  } catch {
    return { problems: ["canonicalPayload is not JSON"], payload: {} };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return { problems: ["canonicalPayload is not a JSON object"], payload: {} };
  }
  const payload = parsed as Record<string, unknown>;
  const problems: string[] = [];
  if (payload["type"] !== RECEIPT_TYPE) problems.push(`payload type is not ${RECEIPT_TYPE}`);
  const deleted = payload["deletedCounts"];
  const values = typeof deleted === "object" && deleted !== null ? Object.values(deleted) : undefined;
  if (!values || !values.every((v) => typeof v === "number" && Number.isInteger(v) && v >= 0)) {
    problems.push("payload deletedCounts is not a map of counts");
  } else if (payload["totalDeleted"] !== (values as number[]).reduce((a, b) => a + b, 0)) {
    problems.push("payload totalDeleted is not the sum of deletedCounts");
  }
  for (const name of ["tenantId", "customerId", "auditEventId", "auditIntegrityHash", "erasedAt"]) {
    if (typeof payload[name] !== "string" || payload[name] === "") problems.push(`payload ${name} is missing`);
  }
  if ("recipients" in payload) problems.push(...recipientProblems(payload["recipients"]));
  if (!Buffer.from(canonicalBytes(payload)).equals(data)) problems.push("canonicalPayload is not in RFC 8785 canonical form");
  if (!verifyDigest(data, receipt.digestSha256 || "")) problems.push("digestSha256 does not match canonicalPayload");
  if ((receipt.keyId ?? "") !== payload["keyId"]) problems.push("keyId differs from the signed payload's keyId");
  if (!receipt.signature || receipt.signature === UNSIGNED) {
    if (!options.allowUnsigned) problems.push("the receipt is unsigned (the service had no signing key)");
  } else if (publicKeyPem === undefined) {
    problems.push("a public key is needed to verify a signed receipt");
  } else if (payload["algorithm"] !== RECEIPT_ALGORITHM) {
    problems.push(`unsupported algorithm ${JSON.stringify(payload["algorithm"])}`);
  } else {
    if (receipt.keyId !== keyId(publicKeyPem)) problems.push("keyId is not the id of the given public key");
    if (!verifySignature(data, receipt.signature, publicKeyPem)) {
      problems.push("the signature does not verify with the given public key");
    }
  }
  if (response) {
    if (response.customerId !== payload["customerId"]) problems.push("customerId differs from the signed payload");
    if (!sameCounts(counts(response.deletedCounts), counts(payload["deletedCounts"]))) {
      problems.push("deletedCounts differ from the signed payload");
    }
    if (Number(response.totalDeleted) !== payload["totalDeleted"]) problems.push("totalDeleted differs from the signed payload");
    if (JSON.stringify([...response.skippedTables]) !== JSON.stringify(payload["skippedTables"])) {
      problems.push("skippedTables differ from the signed payload");
    }
  }
  return { problems, payload };
}

// Byte compatibility with the Python client, without a server: Python makes
// the artefacts here, at test time, with keys generated for this run only (no
// key is ever committed), writes them to a temp dir, and TypeScript checks them;
// and the reverse for canonical JSON.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  AuthenticationFailed,
  canonicalize,
  decryptEnvelope,
  EnvelopeError,
  idempotentMethods,
  isCanonical,
  parseKeyRing,
  type ReceiptLike,
  verifyArtifact,
  verifyErasureReceipt,
  verifySignature,
} from "../index.js";
import { PYTHON, ROOT } from "./support.js";

const work = mkdtempSync(join(tmpdir(), "kaireon-ts-compat-"));
after(() => rmSync(work, { recursive: true, force: true }));

function python(code: string, ...args: string[]): string {
  const result = spawnSync(PYTHON, ["-c", code, ...args], { cwd: ROOT, encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
}

// Values where canonical forms usually disagree: number formatting, key order
// by UTF-16 code units (not code points), escapes, non-ASCII.
const TRICKY = {
  numbers: [0, -0, 1, -1.5, 0.1, 1e21, 1e-7, 123456789012345, 5e-324, 1.7976931348623157e308, 100, 2 ** 53 - 1],
  "\u20ac": "euro",
  "\ud83d\ude00": "emoji key sorts by code units",
  "\ufb33": "after the emoji in UTF-16 order",
  a: { z: null, y: true, x: false, "": "" },
  text: "quote \" backslash \\ control \u0001 \n\t line-sep \u2028 \u00e9 \ud83d\ude00",
  nested: [[], {}, [{ b: 1, a: 2 }]],
};

describe("canonical JSON (RFC 8785)", () => {
  it("TypeScript's canonical form is byte-identical to Python's rfc8785", () => {
    const ours = canonicalize(TRICKY);
    const theirs = python(
      "import json, sys, rfc8785; sys.stdout.buffer.write(rfc8785.dumps(json.loads(sys.argv[1])))",
      JSON.stringify(TRICKY),
    );
    assert.equal(ours, theirs);
    assert.ok(isCanonical(Buffer.from(ours, "utf8")));
    assert.equal(isCanonical(Buffer.from(JSON.stringify(TRICKY, null, 1), "utf8")), false);
    assert.equal(isCanonical(Buffer.from([0x7b, 0xff, 0x7d])), false, "invalid UTF-8 is not canonical");
  });
});

describe("AES-256-GCM envelope made by the Python client", () => {
  const spec = `old:${randomBytes(32).toString("base64url")},v2:${randomBytes(32).toString("base64")}`;
  const plain = canonicalize({ customerId: "cust_00001", data: { text: "é 😀" }, requestId: "r-1" });
  const envelopePath = join(work, "envelope.json");
  python(
    `import sys
from pathlib import Path
from kaireon_client.envelope import KeyRing, encrypt_document
ring = KeyRing.parse(sys.argv[1])
Path(sys.argv[3]).write_bytes(encrypt_document(sys.argv[2].encode(), ring, tenant_id="acme", request_id="r-1", exported_at="2026-01-01T00:00:00.000000Z"))`,
    spec,
    plain,
    envelopePath,
  );
  const envelope = readFileSync(envelopePath);

  it("decrypts to the exact plaintext bytes, with the active key version", () => {
    const { plaintext, info } = decryptEnvelope(envelope, parseKeyRing(spec), { tenantId: "acme", requestId: "r-1" });
    assert.equal(plaintext.toString("utf8"), plain);
    assert.deepEqual(info, { keyVersion: "v2", tenantId: "acme", requestId: "r-1", exportedAt: "2026-01-01T00:00:00.000000Z" });
    assert.ok(isCanonical(envelope), "the envelope itself is canonical JSON");
  });

  it("refuses another tenant, a flipped ciphertext byte, a missing key version, bad key specs", () => {
    const ring = parseKeyRing(spec);
    assert.throws(() => decryptEnvelope(envelope, ring, { tenantId: "other" }), AuthenticationFailed);
    const doc = JSON.parse(envelope.toString("utf8")) as { data: { ciphertext: string } };
    const raw = Buffer.from(doc.data.ciphertext, "base64");
    raw[20] = (raw[20] ?? 0) ^ 1;
    doc.data.ciphertext = raw.toString("base64");
    assert.throws(() => decryptEnvelope(doc as unknown as Record<string, unknown>, ring), AuthenticationFailed);
    assert.throws(() => decryptEnvelope(envelope, parseKeyRing(spec.split(",")[0] as string)), /key version 'v2' is not in the key ring/);
    assert.throws(() => parseKeyRing("v1:AAAA"), /must be 32 bytes/);
    assert.throws(() => parseKeyRing("v 1:AAAA"), EnvelopeError);
    assert.throws(() => parseKeyRing(`v1:${randomBytes(32).toString("base64")},v1:${randomBytes(32).toString("base64")}`), /listed twice/);
    assert.throws(() => parseKeyRing(spec, "v3"), /not configured/);
    assert.throws(() => decryptEnvelope(Buffer.from("[]"), ring), /expected a JSON object/);
  });
});

describe("ECDSA P-256 signatures", () => {
  it("verifies cosign-style base64 DER signatures, and nothing else", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
    const body = Buffer.from(canonicalize({ a: 1 }));
    const signature = sign("sha256", body, { key: privateKey, dsaEncoding: "der" }).toString("base64");
    assert.ok(verifySignature(body, signature, pem));
    assert.equal(verifySignature(Buffer.from('{"a":2}'), signature, pem), false);
    assert.equal(verifySignature(body, "unsigned", pem), false);
    assert.equal(verifySignature(body, "not base64!", pem), false);
    const other = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({ type: "spki", format: "pem" }).toString();
    assert.equal(verifySignature(body, signature, other), false);
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "pem" }).toString();
    assert.equal(verifySignature(body, signature, rsa), false, "only P-256 keys");
    const unsigned = verifyArtifact(body, { signature: "unsigned", publicKeyPem: pem });
    assert.equal(unsigned.ok, false);
    assert.ok(verifyArtifact(body, { signature: "unsigned", allowUnsigned: true }).ok);
  });
});

describe("call policy", () => {
  it("the retried (GET-annotated) methods are the Python client's", () => {
    const theirs = JSON.parse(
      python("import json; from kaireon_client.client import idempotent_methods; print(json.dumps(sorted(f'{s}/{m}' for s, m in idempotent_methods())))"),
    ) as string[];
    assert.deepEqual([...idempotentMethods()].sort(), theirs);
    assert.ok(theirs.includes("kaireon.dsar.v1.DsarService/WatchDsarRequest"));
    assert.ok(!theirs.includes("kaireon.erasure.v1.ErasureService/EraseCustomer"));
  });
});

describe("erasure receipt recipients", () => {
  // Python's receipt_payload lists processors; the problems TypeScript finds
  // in a malformed list are the ones Python's verify_receipt reports.
  const make = `
import json, sys
from datetime import datetime, timezone
from kaireon_client.canonical import canonical_json, sha256_hex
from kaireon_client.receipt import receipt_payload, verify_receipt
payload = receipt_payload(tenant_id="acme", customer_id="c1", deleted_counts={"a": 1},
    skipped_tables=[], audit_event_id="e", audit_seq=1, audit_integrity_hash="h",
    erased_at=datetime(2026, 1, 1, tzinfo=timezone.utc), key_id="",
    recipients=[{"processorId": "p1", "name": "crm", "eventId": "ev1", "state": "queued"}])
if sys.argv[1] == "bad":
    payload["recipients"][0]["state"] = "delivered"
data = canonical_json(payload)
receipt = {"canonicalPayload": data.decode(), "digestSha256": sha256_hex(data),
           "signature": "unsigned", "keyId": ""}
report = verify_receipt(receipt, None, allow_unsigned=True)
print(json.dumps({"receipt": receipt, "problems": report.messages}))
`;
  for (const kind of ["good", "bad"]) {
    it(`${kind}: TypeScript reports what Python reports`, () => {
      const made = JSON.parse(python(make, kind)) as { receipt: ReceiptLike; problems: string[] };
      const { problems } = verifyErasureReceipt(made.receipt, undefined, { allowUnsigned: true });
      assert.deepEqual(problems, made.problems);
      assert.equal(problems.length, kind === "good" ? 0 : 1);
    });
  }
});

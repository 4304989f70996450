// Every RPC of the six services, from TypeScript, against a real server
// (kaireon-server --demo on embedded PostgreSQL, started here) over gRPC/HTTP/2.
// Signatures the server made verify here; the envelope it encrypted decrypts
// here; and the Python verifiers accept the very same artefacts (written to a
// temp dir and handed to `kaireon verify bundle`, `kaireon verify receipt`
// and `kaireon dsar decrypt`), so both implementations agree on the bytes.
import { fromJson, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import ts from "typescript";
import { after, before, describe, it } from "node:test";
import {
  AuthenticationFailed,
  createKaireonClient,
  decryptEnvelope,
  EraseCustomerResponseSchema,
  errorReason,
  fieldViolations,
  FlowDefinitionSchema,
  isCanonical,
  keyId,
  NodeState,
  parseKeyRing,
  RunEventType,
  RunState,
  SERVICES,
  verifyArtifact,
  verifyBundle,
  verifyErasureReceipt,
  VerificationResult,
  type KaireonClient,
  type WatchRunResponse,
} from "../index.js";
import type { RestSchema } from "../rest.js";
import { PACKAGE_DIR, PYTHON, ROOT, signJwt, startServer, type LiveServer } from "./support.js";

const TENANT = "demo";
let server: LiveServer;
let admin: KaireonClient;
let work: string;

// Every RPC that reached the server from any client of this file (answered, or
// refused by the server: either way the method was called over the wire).
const called = new Set<string>();
const record: Interceptor = (next) => async (req) => {
  called.add(`${req.service.typeName}/${req.method.name}`);
  return next(req);
};

async function rejects(call: Promise<unknown>, code: Code, reason: string): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    assert.equal(errorReason(err), reason, err.message);
    return err;
  }
  assert.fail(`expected ${Code[code]} ${reason}`);
}

async function readAll(stream: AsyncIterable<{ chunk?: { data: Uint8Array } | undefined; offset: bigint }>): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0n;
  for await (const piece of stream) {
    assert.equal(piece.offset, size, "chunks arrive in order, offset = bytes so far");
    const data = Buffer.from(piece.chunk?.data ?? new Uint8Array());
    parts.push(data);
    size += BigInt(data.length);
  }
  return Buffer.concat(parts);
}

// The `kaireon` console script of the Python client, run by the venv's interpreter.
const KAIREON_CLI = "import sys; from kaireon_client.cli import main; sys.argv[0] = 'kaireon'; sys.exit(main())";

function python(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } {
  const result = spawnSync(PYTHON, args, { cwd: ROOT, env: { ...process.env, ...env }, encoding: "utf8" });
  return { status: result.status, out: `${result.stdout}${result.stderr}` };
}

before(async () => {
  server = await startServer();
  admin = createKaireonClient({ baseUrl: server.grpcUrl, tenant: TENANT, role: "admin", interceptors: [record] });
  work = mkdtempSync(join(tmpdir(), "kaireon-ts-artefacts-"));
  writeFileSync(join(work, "signing-key.pub"), server.publicKeyPem);
});

after(async () => {
  await server?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("ProvenanceService", () => {
  it("GetSigningKey serves the key the server signs with", async () => {
    const key = await admin.provenance.getSigningKey({});
    assert.equal(key.publicKeyPem.trim(), server.publicKeyPem.trim());
    assert.equal(key.keyId, keyId(server.publicKeyPem));
  });

  it("GetDecisionProvenance: a signed bundle that verifies in TypeScript and in Python", async () => {
    const answer = await admin.provenance.getDecisionProvenance({ decisionId: "dec_00001_1" });
    const body = Buffer.from(answer.bundle?.data ?? new Uint8Array());
    assert.equal(answer.bundle?.contentType.split(";")[0], "application/json");
    const report = verifyBundle(body, {
      digest: answer.digestSha256,
      signature: answer.signature,
      publicKeyPem: server.publicKeyPem,
    });
    assert.ok(report.ok, JSON.stringify(report.checks));
    assert.deepEqual(
      report.checks.map((c) => c.name),
      ["digest", "signature", "canonical", "schema", "audit-links"],
    );
    // One flipped byte: digest and signature both fail.
    const tampered = Buffer.from(body);
    tampered[tampered.indexOf("dec_00001_1")] = "D".charCodeAt(0);
    const bad = verifyBundle(tampered, { digest: answer.digestSha256, signature: answer.signature, publicKeyPem: server.publicKeyPem });
    assert.equal(bad.ok, false);
    assert.deepEqual(bad.checks.filter((c) => !c.ok).map((c) => c.name), ["digest", "signature"]);
    // The same bytes through the Python verifier.
    writeFileSync(join(work, "bundle.json"), body);
    writeFileSync(join(work, "bundle.json.sha256"), `${answer.digestSha256}\n`);
    writeFileSync(join(work, "bundle.json.sig"), `${answer.signature}\n`);
    const py = python(["-c", KAIREON_CLI, "verify", "bundle", join(work, "bundle.json"), "--key", join(work, "signing-key.pub")]);
    assert.equal(py.status, 0, py.out);
  });

  it("StreamDecisionProvenance: the unary bundles, in order, and not_found for a missing id", async () => {
    const unary = await admin.provenance.getDecisionProvenance({ decisionId: "dec_00001_2" });
    const got = [];
    for await (const m of admin.provenance.streamDecisionProvenance({ decisionIds: ["dec_00001_2", "dec_99999_9"] })) got.push(m);
    assert.deepEqual(got.map((m) => [m.decisionId, m.notFound]), [["dec_00001_2", false], ["dec_99999_9", true]]);
    assert.deepEqual(Buffer.from(got[0]?.bundle?.data ?? new Uint8Array()), Buffer.from(unary.bundle?.data ?? new Uint8Array()));
  });

  it("an unknown decision is NOT_FOUND with reason DECISION_NOT_FOUND", async () => {
    await rejects(admin.provenance.getDecisionProvenance({ decisionId: "dec_99999_9" }), Code.NotFound, "DECISION_NOT_FOUND");
  });
});

describe("AuditService", () => {
  it("ListAuditEvents pages through the chain", async () => {
    const page = await admin.audit.listAuditEvents({ pageSize: 2 });
    assert.equal(page.events.length, 2);
    assert.notEqual(page.nextPageToken, "");
    const next = await admin.audit.listAuditEvents({ pageSize: 2, pageToken: page.nextPageToken });
    assert.ok(next.events.length >= 1);
    assert.ok((next.events[0]?.seq ?? 0n) !== page.events[0]?.seq);
  });

  it("VerifyChain recomputes the tenant's chain", async () => {
    const verdict = await admin.audit.verifyChain({});
    assert.equal(verdict.valid, true, verdict.reason);
    assert.ok(verdict.rowsChecked > 0n);
    assert.match(verdict.headHash, /^[0-9a-f]{64}$/);
  });

  it("the transparency log: checkpoint, proofs, entries, cosignature, verification", async () => {
    // The integrator checkpoints new rows within about a second (generous here).
    let cp = (await admin.audit.getCheckpoint({})).checkpoint;
    for (let i = 0; i < 200 && (cp?.treeSize ?? 0n) === 0n; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      cp = (await admin.audit.getCheckpoint({})).checkpoint;
    }
    assert.ok(cp && cp.treeSize > 0n);
    assert.equal(cp.rootHash.length, 32);
    const inclusion = await admin.audit.getInclusionProof({ index: 0n, treeSize: cp.treeSize });
    assert.equal(inclusion.index, 0n);
    assert.equal(JSON.parse(inclusion.leaf).seq, 1);
    const consistency = await admin.audit.getConsistencyProof({ firstSize: cp.treeSize, secondSize: cp.treeSize });
    assert.equal(consistency.hashes.length, 0);
    const tile = await admin.audit.getLogResource({ path: "checkpoint" });
    assert.equal(new TextDecoder().decode(tile.body?.data).split("\n")[0], cp.origin);
    const entries = await admin.audit.listEntries({ treeSize: cp.treeSize });
    assert.equal(JSON.parse(entries.export).format, "kaireon-audit-export/v1");
    await rejects(admin.audit.addCosignature({ cosignature: "not a line" }), Code.InvalidArgument, "INVALID_FIELD");
    const verdict = await admin.audit.verifyLog({});
    assert.equal(verdict.valid, true, verdict.reason);
    let last;
    for await (const message of admin.audit.streamVerifyLog({})) last = message;
    assert.equal(last?.result?.valid, true, last?.result?.reason);
  });

  it("bad input is INVALID_ARGUMENT with the field named", async () => {
    const err = await rejects(admin.audit.listAuditEvents({ pageSize: -1 }), Code.InvalidArgument, "INVALID_FIELD");
    assert.ok(fieldViolations(err).some((v) => v.field === "page_size" || v.field === "pageSize"), err.message);
  });
});

describe("ErasureService", () => {
  const customer = "cust_00042";

  it("SetLegalHold / ListLegalHolds / EraseCustomer refused / ReleaseLegalHold", async () => {
    const set = await admin.erasure.setLegalHold({ customerId: customer, reason: "litigation 2026-17" });
    assert.equal(set.legalHold?.customerId, customer);
    const holds = await admin.erasure.listLegalHolds({ pageSize: 50 });
    assert.ok(holds.legalHolds.some((h) => h.customerId === customer));
    await rejects(admin.erasure.eraseCustomer({ customerId: customer }), Code.FailedPrecondition, "LEGAL_HOLD");
    await rejects(admin.erasure.setLegalHold({ customerId: customer, reason: "again" }), Code.AlreadyExists, "LEGAL_HOLD_EXISTS");
    const released = await admin.erasure.releaseLegalHold({ customerId: customer });
    assert.equal(released.legalHold?.customerId, customer);
    await rejects(admin.erasure.releaseLegalHold({ customerId: customer }), Code.NotFound, "LEGAL_HOLD_NOT_FOUND");
  });

  it("EraseCustomer: dry run, then a signed receipt that verifies in TypeScript and in Python", async () => {
    const preview = await admin.erasure.eraseCustomer({ customerId: customer, dryRun: true });
    assert.equal(preview.dryRun, true);
    assert.equal(preview.receipt, undefined);
    assert.ok(preview.totalDeleted > 0);

    const done = await admin.erasure.eraseCustomer({ customerId: customer });
    assert.equal(done.success, true);
    assert.equal(done.totalDeleted, preview.totalDeleted);
    const { problems, payload } = verifyErasureReceipt(done, server.publicKeyPem);
    assert.deepEqual(problems, []);
    assert.equal(payload["tenantId"], TENANT);
    assert.equal(payload["customerId"], customer);

    // Any change to a signed field, or another key, fails.
    const forged = { ...done, totalDeleted: done.totalDeleted + 1 };
    assert.deepEqual(verifyErasureReceipt(forged, server.publicKeyPem).problems, ["totalDeleted differs from the signed payload"]);
    const receipt = done.receipt!;
    const edited = { ...receipt, canonicalPayload: receipt.canonicalPayload.replace(customer, "cust_00043") };
    assert.ok(verifyErasureReceipt(edited, server.publicKeyPem).problems.includes("the signature does not verify with the given public key"));

    writeFileSync(join(work, "erasure.json"), toJsonString(EraseCustomerResponseSchema, done, { alwaysEmitImplicit: true }));
    const py = python(["-c", KAIREON_CLI, "verify", "receipt", join(work, "erasure.json"), "--key", join(work, "signing-key.pub")]);
    assert.equal(py.status, 0, py.out);
  });
});

async function watchToEnd(client: KaireonClient, id: string): Promise<{ statuses: string[]; last: string }> {
  const statuses: string[] = [];
  // The server ends the watch at a terminal status; the signal only bounds a hang.
  for await (const event of client.dsar.watchDsarRequest({ id }, { signal: AbortSignal.timeout(120_000) })) {
    statuses.push(event.request?.status ?? "");
  }
  return { statuses, last: statuses[statuses.length - 1] ?? "" };
}

describe("DsarService", () => {
  it("CreateDsarRequest, WatchDsarRequest to completion, Get, List, StreamDsarExport: a signed package", async () => {
    const created = await admin.dsar.createDsarRequest({ requestType: "export", subjectId: "cust_00007" });
    const id = created.request!.id;
    assert.equal(created.request?.status === "pending" || created.request?.status === "processing", true);
    const watched = await watchToEnd(admin, id);
    assert.equal(watched.last, "completed", watched.statuses.join(","));

    const got = await admin.dsar.getDsarRequest({ id });
    assert.equal(got.request?.status, "completed");
    assert.equal(got.request?.exportedData?.customerId, "cust_00007");
    const listed = await admin.dsar.listDsarRequests({ status: "completed", subjectId: "cust_00007" });
    assert.ok(listed.requests.some((r) => r.id === id));

    const body = await readAll(admin.dsar.streamDsarExport({ id }));
    assert.equal(BigInt(body.length), got.request?.exportSizeBytes);
    const report = verifyArtifact(body, {
      digest: got.request!.exportDigestSha256,
      signature: got.request!.exportSignature,
      publicKeyPem: server.publicKeyPem,
    });
    assert.ok(report.ok, JSON.stringify(report.checks));
    assert.equal(got.request?.exportSigningKeyId, keyId(server.publicKeyPem));
  });

  it("an encrypted export: the envelope is signed, decrypts in TypeScript, and Python decrypts it to the same bytes", async () => {
    const created = await admin.dsar.createDsarRequest({ requestType: "export", subjectId: "cust_00008", encrypt: true });
    const id = created.request!.id;
    assert.equal((await watchToEnd(admin, id)).last, "completed");
    const got = (await admin.dsar.getDsarRequest({ id })).request!;
    assert.equal(got.exportKeyVersion, "v1");
    const envelope = await readAll(admin.dsar.streamDsarExport({ id }));
    const report = verifyArtifact(envelope, { digest: got.exportDigestSha256, signature: got.exportSignature, publicKeyPem: server.publicKeyPem });
    assert.ok(report.ok, JSON.stringify(report.checks));

    const ring = parseKeyRing(server.encryptionKeys);
    const { plaintext, info } = decryptEnvelope(envelope, ring, { tenantId: TENANT, requestId: id });
    assert.deepEqual([info.tenantId, info.requestId, info.keyVersion], [TENANT, id, "v1"]);
    assert.ok(isCanonical(plaintext), "the plaintext is the canonical plain export");
    const doc = JSON.parse(plaintext.toString("utf8")) as Record<string, unknown>;
    assert.equal(doc["customerId"], "cust_00008");
    assert.equal(doc["requestId"], id);

    // Bound to tenant and request; and tamper-evident.
    assert.throws(() => decryptEnvelope(envelope, ring, { tenantId: "other" }), AuthenticationFailed);
    assert.throws(() => decryptEnvelope(envelope, ring, { requestId: "00000000-0000-0000-0000-000000000000" }), AuthenticationFailed);
    const moved = JSON.parse(envelope.toString("utf8")) as { data: { tenantId: string } };
    moved.data.tenantId = "other";
    assert.throws(() => decryptEnvelope(moved as unknown as Record<string, unknown>, ring), AuthenticationFailed);
    const wrongKey = parseKeyRing(`v1:${Buffer.alloc(32, 7).toString("base64")}`);
    assert.throws(() => decryptEnvelope(envelope, wrongKey), AuthenticationFailed);

    writeFileSync(join(work, "envelope.json"), envelope);
    writeFileSync(join(work, "keys"), server.encryptionKeys);
    const out = join(work, "plain-python.json");
    const py = python([
      "-c", KAIREON_CLI, "dsar", "decrypt", join(work, "envelope.json"), "--keys-file", join(work, "keys"),
      "--out", out, "--tenant-id", TENANT, "--request-id", id,
    ]);
    assert.equal(py.status, 0, py.out);
    assert.ok(readFileSync(out).equals(plaintext), "Python and TypeScript decrypt to the same bytes");
  });

  it("errors: unknown id, bad request type", async () => {
    await rejects(admin.dsar.getDsarRequest({ id: "9b2f9a52-4e4d-4a43-8a43-0d6a8d1c0e51" }), Code.NotFound, "DSAR_REQUEST_NOT_FOUND");
    await rejects(admin.dsar.createDsarRequest({ requestType: "delete", subjectId: "cust_00001" }), Code.InvalidArgument, "UNKNOWN_REQUEST_TYPE");
  });
});

describe("FlowRunnerService", () => {
  const definition = fromJson(FlowDefinitionSchema, JSON.parse(readFileSync(join(ROOT, "docs", "examples", "flow.json"), "utf8")));
  const runId = `ts-client-${Date.now()}`;

  async function watch(id: string): Promise<WatchRunResponse[]> {
    const events: WatchRunResponse[] = [];
    for await (const event of admin.flow.watchRun({ runId: id }, { signal: AbortSignal.timeout(120_000) })) {
      events.push(event);
      if (event.type === RunEventType.RUN_FINISHED) break;
    }
    return events;
  }

  it("StartRun, WatchRun to RUN_FINISHED, GetRun, ListRuns", async () => {
    const started = await admin.flow.startRun({ definition, runId });
    assert.equal(started.run?.runId, runId);
    const events = await watch(runId);
    assert.equal(events[0]?.type, RunEventType.SNAPSHOT);
    const last = events[events.length - 1];
    assert.equal(last?.type, RunEventType.RUN_FINISHED, events.map((e) => RunEventType[e.type]).join(","));
    assert.equal(last?.run?.state, RunState.SUCCEEDED, last?.run?.error);

    const run = (await admin.flow.getRun({ runId })).run!;
    assert.equal(run.state, RunState.SUCCEEDED);
    assert.deepEqual(run.nodes.map((n) => n.nodeId).sort(), ["big", "src"]);
    // A node's output: canonical JSON whose sha256 is the node's output digest.
    const output = await admin.flow.getNodeOutput({ runId, nodeId: "big" });
    assert.equal(output.truncated, false);
    assert.equal(output.outputDigest, run.nodes.find((n) => n.nodeId === "big")?.outputDigest);
    assert.ok(Array.isArray(JSON.parse(output.outputJson)));
    const capped = await admin.flow.getNodeOutput({ runId, nodeId: "big", maxBytes: 1 });
    assert.equal(capped.truncated, true);
    assert.equal(capped.outputJson, "");
    await rejects(admin.flow.getNodeOutput({ runId, nodeId: "ghost" }), Code.NotFound, "NODE_NOT_FOUND");
    const listed = await admin.flow.listRuns({ pageSize: 50 });
    assert.ok(listed.runs.some((r) => r.runId === runId));
    await rejects(admin.flow.startRun({ definition, runId }), Code.AlreadyExists, "RUN_EXISTS");
  });

  it("ClearCheckpoints, RetryRun (watched to the end), CancelRun of a finished run", async () => {
    const cleared = await admin.flow.clearCheckpoints({ runId });
    assert.equal(cleared.cleared, 2);
    const retried = await admin.flow.retryRun({ runId });
    assert.equal(retried.run?.attempt, 2);
    const events = await watch(runId);
    assert.equal(events[events.length - 1]?.run?.state, RunState.SUCCEEDED);
    // No checkpoints were left: both nodes ran again rather than being skipped.
    // Read from the run, not the watch's node events: a retry that finished before
    // the watch began is one SNAPSHOT (seen on a loaded machine).
    const rerun = (await admin.flow.getRun({ runId })).run!;
    assert.deepEqual(
      rerun.nodes.map((n) => `${n.nodeId}:${NodeState[n.state]}`).sort(),
      ["big:COMPLETED", "src:COMPLETED"],
    );
    await rejects(admin.flow.cancelRun({ runId }), Code.FailedPrecondition, "RUN_NOT_RUNNING");
    await rejects(admin.flow.getRun({ runId: "no-such-run" }), Code.NotFound, "RUN_NOT_FOUND");
  });
});

describe("identity, deadlines, retries", () => {
  it("a token provider (bearer JWT) is the identity; roles are enforced", async () => {
    let asked = 0;
    const viewer = createKaireonClient({
      baseUrl: server.grpcUrl,
      token: () => {
        asked++;
        return signJwt(server.jwtSecret, { tenant_id: TENANT, role: "viewer", sub: "ts-test", exp: Math.floor(Date.now() / 1000) + 300 });
      },
    });
    const key = await viewer.provenance.getSigningKey({});
    assert.equal(key.keyId, keyId(server.publicKeyPem));
    await rejects(viewer.audit.verifyChain({}), Code.PermissionDenied, "INSUFFICIENT_ROLE");
    assert.equal(asked, 2, "the provider is asked on every call");
  });

  it("a failing token provider fails the call as UNAUTHENTICATED, before anything is sent", async () => {
    const broken = createKaireonClient({
      baseUrl: server.grpcUrl,
      token: async () => {
        throw new Error("vault sealed");
      },
    });
    await assert.rejects(broken.provenance.getSigningKey({}), (e: unknown) => {
      const err = ConnectError.from(e);
      return err.code === Code.Unauthenticated && err.rawMessage.includes("vault sealed");
    });
  });

  it("a per-call timeoutMs of 0 means no deadline, as in Connect", async () => {
    const hasty = createKaireonClient({ baseUrl: server.grpcUrl, tenant: TENANT, role: "admin", timeoutMs: 1 });
    assert.equal((await hasty.audit.verifyChain({}, { timeoutMs: 0 })).valid, true);
  });

  it("one identity source per client", () => {
    assert.throws(() => createKaireonClient({ baseUrl: server.grpcUrl, tenant: TENANT, token: "t" }), /either token or tenant\/role/);
    assert.throws(() => createKaireonClient({ baseUrl: server.grpcUrl, tenant: "demo tenant" }), /printable ASCII/);
  });

  it("no identity is UNAUTHENTICATED", async () => {
    const anonymous = createKaireonClient({ baseUrl: server.grpcUrl });
    try {
      await anonymous.provenance.getSigningKey({});
      assert.fail("expected UNAUTHENTICATED");
    } catch (e) {
      assert.equal(ConnectError.from(e).code, Code.Unauthenticated);
    }
  });

  it("the default deadline applies to unary calls (DEADLINE_EXCEEDED)", async () => {
    const hasty = createKaireonClient({ baseUrl: server.grpcUrl, tenant: TENANT, role: "admin", timeoutMs: 1 });
    try {
      await hasty.audit.listAuditEvents({ pageSize: 1000 });
      assert.fail("expected DEADLINE_EXCEEDED");
    } catch (e) {
      assert.equal(Code[ConnectError.from(e).code], Code[Code.DeadlineExceeded]);
    }
  });

  it("idempotent (GET) methods are retried on UNAVAILABLE, others are not", async () => {
    // A port nobody listens on (bound, then closed): every attempt is refused (UNAVAILABLE).
    const probe = createServer();
    await new Promise<void>((done) => probe.listen(0, "127.0.0.1", done));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((done) => probe.close(() => done()));
    const attempts = new Map<string, number>();
    const count: Interceptor = (next) => async (req) => {
      attempts.set(req.method.name, (attempts.get(req.method.name) ?? 0) + 1);
      return next(req);
    };
    const closed = createKaireonClient({
      baseUrl: `http://127.0.0.1:${port}`, tenant: TENANT, role: "admin", interceptors: [count],
      retry: { maxAttempts: 4, initialBackoffMs: 10, maxBackoffMs: 50, backoffMultiplier: 2 },
    });
    for (const call of [() => closed.provenance.getSigningKey({}), () => closed.audit.verifyChain({})]) {
      try {
        await call();
        assert.fail("expected UNAVAILABLE");
      } catch (e) {
        assert.equal(Code[ConnectError.from(e).code], Code[Code.Unavailable]);
      }
    }
    const events: unknown[] = [];
    try {
      for await (const e of closed.flow.watchRun({ runId: "x" })) events.push(e);
      assert.fail("expected UNAVAILABLE");
    } catch (e) {
      assert.equal(Code[ConnectError.from(e).code], Code[Code.Unavailable]);
    }
    assert.deepEqual(Object.fromEntries(attempts), { GetSigningKey: 4, VerifyChain: 1, WatchRun: 4 });
  });
});

describe("REST types (openapi-typescript)", () => {
  it("the committed src/gen/openapi.ts is what the served /openapi.json generates", async () => {
    const served = await fetch(`${server.httpUrl}/openapi.json`);
    assert.equal(served.status, 200);
    writeFileSync(join(work, "openapi.json"), Buffer.from(await served.arrayBuffer()));
    const out = join(work, "openapi.ts");
    execFileSync(join(PACKAGE_DIR, "node_modules", ".bin", "openapi-typescript"), [join(work, "openapi.json"), "-o", out, "--silent"]);
    const committed = readFileSync(join(PACKAGE_DIR, "src", "gen", "openapi.ts"), "utf8");
    assert.ok(readFileSync(out, "utf8") === committed, "src/gen/openapi.ts is stale: npm run generate");
  });

  it("a typed REST call through the adapter", async () => {
    const answer = await fetch(`${server.httpUrl}/api/v1/audit:verify`, {
      method: "POST",
      headers: { "X-Tenant-Id": TENANT, "X-User-Role": "admin", "Content-Type": "application/json" },
      body: "{}",
    });
    assert.equal(answer.status, 200);
    const verdict = (await answer.json()) as RestSchema<"kaireon.audit.v1.VerifyChainResponse">;
    assert.equal(verdict.valid, true);
    assert.match(String(verdict.rowsChecked), /^[1-9][0-9]*$/);
  });
});

describe("README", () => {
  function runExample(readme: string): string[] {
    const source = /```ts\n([\s\S]*?)```/.exec(readFileSync(readme, "utf8"))?.[1] ?? "";
    assert.ok(source.includes("createKaireonClient"), `no example in ${readme}`);
    const js = ts
      .transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } })
      .outputText.replace('"@kaireon/compliance-client"', JSON.stringify(pathToFileURL(join(PACKAGE_DIR, "dist", "index.js")).href))
      .replace("http://localhost:50051", server.grpcUrl);
    const file = join(work, `example-${Date.now()}.mjs`);
    writeFileSync(file, js);
    return execFileSync(process.execPath, [file], { encoding: "utf8", timeout: 120_000 }).trim().split("\n");
  }

  it("the package README's ten-line example runs against the server as written", () => {
    const lines = runExample(join(PACKAGE_DIR, "README.md"));
    assert.match(lines[0] ?? "", /^(pending|processing|completed) \d+$/);
    assert.deepEqual(lines.slice(-3), ["completed 100", "true", "5 RUN_NOT_FOUND"]);
  });

  it("the repository README's example runs against the server as written", () => {
    const lines = runExample(join(ROOT, "README.md"));
    assert.equal(lines[0], "true");
    assert.equal(lines[1], "SNAPSHOT ");
    assert.deepEqual(lines.slice(-2), ["RUN_FINISHED ", "INVALID_FIELD"]);
  });
});

describe("TLS", () => {
  it("https:// with a private CA and a client certificate (mTLS); refused without them", async () => {
    const certs = join(work, "tls");
    mkdirSync(certs);
    execFileSync(PYTHON, ["-c", "import sys; from pathlib import Path; from tests.support.certs import make_tls_files; make_tls_files(Path(sys.argv[1]))", certs], {
      cwd: ROOT,
    });
    const file = (name: string): string => readFileSync(join(certs, name), "utf8");
    const tls = await startServer(
      {
        KAIREON_TLS_CERT: join(certs, "server.crt"),
        KAIREON_TLS_KEY: join(certs, "server.key"),
        KAIREON_TLS_CLIENT_CA: join(certs, "ca.crt"),
        KAIREON_HTTP_PORT: "off",
      },
      server,
    );
    try {
      assert.match(tls.grpcUrl, /^https:/);
      const secure = createKaireonClient({
        baseUrl: tls.grpcUrl, tenant: TENANT, role: "viewer",
        tls: { ca: file("ca.crt"), cert: file("client.crt"), key: file("client.key") },
      });
      assert.equal((await secure.provenance.getSigningKey({})).keyId, keyId(server.publicKeyPem));
      const noClientCert = createKaireonClient({ baseUrl: tls.grpcUrl, tenant: TENANT, role: "viewer", tls: { ca: file("ca.crt") }, retry: { maxAttempts: 1, initialBackoffMs: 1, maxBackoffMs: 1, backoffMultiplier: 1 } });
      // TLS 1.3: the handshake completes on the client's side before the server
      // refuses the missing certificate, so HTTP/2 reports the stream cancelled.
      await assert.rejects(noClientCert.provenance.getSigningKey({}), (e: unknown) =>
        [Code.Unavailable, Code.Canceled].includes(ConnectError.from(e).code),
      );
      const untrusted = createKaireonClient({ baseUrl: tls.grpcUrl, tenant: TENANT, role: "viewer", retry: { maxAttempts: 1, initialBackoffMs: 1, maxBackoffMs: 1, backoffMultiplier: 1 } });
      // Node's default roots do not know the test CA: the client refuses the server.
      await assert.rejects(untrusted.provenance.getSigningKey({}), (e: unknown) =>
        /unable to verify the first certificate/.test(ConnectError.from(e).message),
      );
      assert.throws(() => createKaireonClient({ baseUrl: server.grpcUrl, tls: { ca: file("ca.crt") } }), /https/);
    } finally {
      await tls.stop();
    }
  });
});

describe("RequestService", () => {
  it("policies, and a request through every transition with its due date", async () => {
    const policies = await admin.requests.listRequestPolicies({});
    assert.deepEqual(policies.policies.map((p) => p.regulation), ["gdpr", "uk_gdpr", "ccpa", "lgpd"]);
    const set = await admin.requests.setRequestPolicy({
      policy: { regulation: "lgpd", periodDays: 15, requireVerification: true },
    });
    assert.equal(set.policy?.overridden, true);

    const access = (await admin.requests.createRequest({ kind: "access", subjectId: "cust_ts_req", regulation: "gdpr" })).request!;
    assert.equal(access.state, "received");
    assert.ok(access.daysLeft >= 28 && access.daysLeft <= 31, String(access.daysLeft));
    const verified = await admin.requests.verifyIdentity({
      id: access.id, method: "email_link", evidenceReference: "TICKET-TS-1", result: VerificationResult.VERIFIED,
    });
    assert.equal(verified.request?.state, "awaiting_approval");
    const approved = await admin.requests.approveRequest({ id: access.id, reason: "checked" });
    assert.equal(approved.request?.state, "in_progress");
    assert.ok(approved.request?.dsarRequestId);

    const erasure = (await admin.requests.createRequest({ kind: "erasure", subjectId: "cust_ts_req", regulation: "ccpa" })).request!;
    assert.equal(erasure.daysLeft, 45);
    const paused = await admin.requests.pauseRequest({ id: erasure.id, reason: "need the account email", requiresInput: true });
    assert.equal(paused.request?.state, "requires_input");
    assert.equal((await admin.requests.resumeRequest({ id: erasure.id })).request?.state, "received");
    const extended = await admin.requests.extendRequest({ id: erasure.id, reason: "complex" });
    assert.equal(extended.request?.daysLeft, 90);
    assert.equal((await admin.requests.denyRequest({ id: erasure.id, reason: "unfounded" })).request?.state, "denied");

    const withdrawn = (await admin.requests.createRequest({ kind: "access", subjectId: "cust_ts_req", regulation: "lgpd" })).request!;
    assert.equal((await admin.requests.cancelRequest({ id: withdrawn.id, reason: "withdrawn" })).request?.state, "cancelled");
    await rejects(admin.requests.resumeRequest({ id: withdrawn.id }), Code.FailedPrecondition, "ILLEGAL_TRANSITION");

    assert.equal((await admin.requests.getRequest({ id: erasure.id })).request?.state, "denied");
    const listed = await admin.requests.listRequests({ state: "cancelled" });
    assert.ok(listed.requests.some((r) => r.id === withdrawn.id));
    const overdue = await admin.requests.listRequests({ overdue: true });
    assert.ok(overdue.requests.every((r) => r.overdue));
  });

  it("processors: registered with a Standard Webhooks secret, listed with delivery counts", async () => {
    const registered = await admin.requests.registerProcessor({ name: "ts-processor", url: "https://processor.example/hooks" });
    assert.match(registered.signingSecret, /^whsec_/);
    const listed = await admin.requests.listProcessors({});
    const mine = listed.processors.find((p) => p.name === "ts-processor");
    assert.equal(mine?.id, registered.processor?.id);
    assert.equal(mine?.pending, 0);
    // A test event to an unreachable address: reported, not thrown.
    const tested = await admin.requests.testProcessor({ processorId: registered.processor?.id ?? "" });
    assert.equal(tested.delivered, false);
    assert.notEqual(tested.webhookId, "");
    // No erasure request: nothing to waive, and B's view of it is "not found".
    await rejects(
      admin.requests.waiveDelivery({ requestId: "9b2f9a52-4e4d-4a43-8a43-0d6a8d1c0e51", processorId: registered.processor?.id ?? "", reason: "erased by hand" }),
      Code.NotFound,
      "SUBJECT_REQUEST_NOT_FOUND",
    );
  });
});

describe("coverage", () => {
  it("every RPC of the six services was called from TypeScript", () => {
    const all = SERVICES.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    assert.equal(all.length, 46);
    assert.deepEqual(all.filter((m) => !called.has(m)), []);
  });
});

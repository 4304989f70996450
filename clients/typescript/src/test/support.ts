// Starts the real server for the TypeScript tests: `python -m kaireon_server --demo`
// on a fresh embedded PostgreSQL (a temp data dir), loopback, ports chosen by the
// server and read from its JSON log (as tests/support/server.py does). Keys are
// made here, per run, and never written into the repository: a P-256 COSIGN_KEY
// (node:crypto), a 32-byte DSAR envelope key, an HS256 JWT secret.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createHmac, generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

// dist/test/support.js -> clients/typescript -> repository root
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const ROOT = resolve(PACKAGE_DIR, "..", "..");
export const PYTHON = process.env["KAIREON_PYTHON"] ?? join(ROOT, ".venv", "bin", "python");

export interface LiveServer {
  grpcUrl: string;
  httpUrl: string;
  publicKeyPem: string;
  encryptionKeys: string;
  jwtSecret: string;
  logLines: string[];
  stop(): Promise<void>;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 JWT as the server's KAIREON_JWT_HS256_SECRET verifies it. */
export function signJwt(secret: string, claims: Record<string, unknown>): string {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const mac = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(mac)}`;
}

interface Secrets {
  cosignKey: string;
  publicKeyPem: string;
  encryptionKeys: string;
  jwtSecret: string;
  dataDir: string;
}

/**
 * A server on a fresh embedded PostgreSQL; or, given `sharing`, a second server
 * process on the same data directory and keys (pgserver lets processes share one
 * data directory), e.g. with TLS settings in `extraEnv`.
 */
export async function startServer(
  extraEnv: Record<string, string> = {},
  sharing?: LiveServer,
  timeoutMs = 240_000,
): Promise<LiveServer> {
  const secrets = sharing ? SECRETS.get(sharing) : undefined;
  const { cosignKey, publicKeyPem, encryptionKeys, jwtSecret, dataDir } = secrets ?? freshSecrets();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    KAIREON_DATA_DIR: dataDir,
    KAIREON_GRPC_HOST: "127.0.0.1",
    KAIREON_GRPC_PORT: "0",
    KAIREON_HTTP_PORT: "auto",
    KAIREON_HEALTH_INTERVAL: "0.5",
    KAIREON_TRUST_HEADERS: "true",
    KAIREON_JWT_HS256_SECRET: jwtSecret,
    COSIGN_KEY: cosignKey,
    KAIREON_ENCRYPTION_KEYS: encryptionKeys,
    ...extraEnv,
  };
  delete env["DATABASE_URL"]; // always the embedded PostgreSQL: --demo seeds an empty database
  const proc: ChildProcessWithoutNullStreams = spawn(PYTHON, ["-m", "kaireon_server", "--demo"], {
    cwd: ROOT,
    env,
    stdio: ["pipe", "ignore", "pipe"] as never,
  });
  const logLines: string[] = [];
  const exited = new Promise<number | null>((done) => proc.once("exit", (code) => done(code)));
  const ports = await new Promise<{ grpc: number; http: number }>((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start in ${timeoutMs} ms`)), timeoutMs);
    const lines = createInterface({ input: proc.stderr });
    lines.on("line", (line) => {
      logLines.push(line);
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry["msg"] === "serving") {
          clearTimeout(timer);
          done({ grpc: Number(entry["grpc_port"]), http: Number(entry["http_port"]) });
        }
      } catch {
        // not a JSON log line
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      fail(new Error(`server exited early (${code}): ${logLines.slice(-20).join("\n")}`));
    });
  }).catch(async (err: unknown) => {
    // Never leave a half-started server (and its PostgreSQL) behind.
    if (proc.exitCode === null) {
      proc.kill("SIGTERM");
      await exited;
    }
    if (!sharing) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
  const scheme = extraEnv["KAIREON_TLS_CERT"] ? "https" : "http";
  const live: LiveServer = {
    grpcUrl: `${scheme}://127.0.0.1:${ports.grpc}`,
    httpUrl: `${scheme}://127.0.0.1:${ports.http}`,
    publicKeyPem,
    encryptionKeys,
    jwtSecret,
    logLines,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill("SIGTERM");
        const killer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
        await exited;
        clearTimeout(killer);
      }
      if (!sharing) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  SECRETS.set(live, { cosignKey, publicKeyPem, encryptionKeys, jwtSecret, dataDir });
  return live;
}

const SECRETS = new WeakMap<LiveServer, Secrets>();

function freshSecrets(): Secrets {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return {
    cosignKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
    encryptionKeys: `v1:${randomBytes(32).toString("base64")}`,
    jwtSecret: randomBytes(32).toString("hex"),
    dataDir: mkdtempSync(join(tmpdir(), "kaireon-ts-")),
  };
}

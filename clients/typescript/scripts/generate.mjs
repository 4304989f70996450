// Regenerates src/gen/ from the repository's protos/ and the REST adapter's OpenAPI.
//
//   npm run generate          # rewrite src/gen/
//   npm run generate:check    # exit 1 when the committed src/gen/ is stale (CI: tools/dev/lint.sh)
//
// - src/gen/kaireon/**, src/gen/google/api/**: `buf generate` with protoc-gen-es
//   (buf from the root package-lock.json, the plugin from this package's lock).
// - src/gen/openapi.ts: openapi-typescript over the document the REST adapter
//   serves at /openapi.json, built offline by the same server code
//   (kaireon_server.gateway.build_openapi); a live test compares it with the
//   served one.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, cpSync, writeFileSync, mkdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = resolve(PKG, "../..");
const TARGET = join(PKG, "src", "gen");
const check = process.argv.includes("--check");

const OPENAPI_DUMP = `
import json, sys
from kaireon_server.gateway import DEFAULT_SERVICES, build_openapi, build_routes
json.dump(build_openapi(build_routes(list(DEFAULT_SERVICES))), sys.stdout)
`;

const GOOGLE_RPC_DIR = `
import os, google.rpc.error_details_pb2 as m
print(os.path.dirname(m.__file__))
`;

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"], ...opts });
}

function generate(out) {
  const genOut = join(out, "gen");
  run(join(ROOT, "node_modules", ".bin", "buf"), [
    "generate",
    "--template", relative(ROOT, join(PKG, "buf.gen.yaml")),
    "--path", "protos/kaireon",
    "-o", join(out, "buf"),
  ]);
  const python = process.env.KAIREON_PYTHON ?? join(ROOT, ".venv", "bin", "python");
  // google.rpc.ErrorInfo / BadRequest (the server's error details) from the
  // googleapis-common-protos wheel pinned in uv.lock, as tools/gen_protos.py uses it.
  const rpc = join(out, "rpc-protos", "google", "rpc");
  mkdirSync(rpc, { recursive: true });
  const wheelRpc = run(python, ["-c", GOOGLE_RPC_DIR]).toString().trim();
  cpSync(join(wheelRpc, "error_details.proto"), join(rpc, "error_details.proto"));
  run(join(ROOT, "node_modules", ".bin", "buf"), [
    "generate", join(out, "rpc-protos"),
    "--template", relative(ROOT, join(PKG, "buf.gen.yaml")),
    "-o", join(out, "buf"),
  ]);
  cpSync(join(out, "buf", "src", "gen"), genOut, { recursive: true });
  const spec = join(out, "openapi.json");
  writeFileSync(spec, run(python, ["-c", OPENAPI_DUMP]));
  run(join(PKG, "node_modules", ".bin", "openapi-typescript"), [spec, "-o", join(genOut, "openapi.ts"), "--silent"]);
  return genOut;
}

function listFiles(dir, base = dir) {
  const found = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...listFiles(path, base));
    else found.push(relative(base, path));
  }
  return found;
}

const tmp = mkdtempSync(join(tmpdir(), "kaireon-tsgen-"));
try {
  const fresh = generate(tmp);
  if (check) {
    let committed = [];
    try {
      committed = listFiles(TARGET);
    } catch {
      // no tree yet: everything is stale
    }
    const wanted = listFiles(fresh);
    const stale = [
      ...wanted.filter((f) => !committed.includes(f) || !readFileSync(join(TARGET, f)).equals(readFileSync(join(fresh, f)))),
      ...committed.filter((f) => !wanted.includes(f)),
    ];
    if (stale.length) {
      console.error(`clients/typescript/src/gen is stale (${stale.join(", ")}): run npm --prefix clients/typescript run generate`);
      process.exitCode = 1; // not process.exit(): the finally block removes the temp dir
    } else {
      console.log(`clients/typescript/src/gen is up to date (${wanted.length} files)`);
    }
  } else {
    rmSync(TARGET, { recursive: true, force: true });
    mkdirSync(dirname(TARGET), { recursive: true });
    cpSync(fresh, TARGET, { recursive: true });
    console.log(`wrote ${listFiles(TARGET).length} files to ${relative(ROOT, TARGET)}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

// `npm pack` ships the built library, its types and the README: no sources,
// scripts, tests, configs or lock files.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { it } from "node:test";
import { PACKAGE_DIR } from "./support.js";

it("the npm tarball holds dist/ (no tests), README.md and package.json only", () => {
  // --ignore-scripts: dist/ was just built by `npm test`; prepack builds it for a real pack.
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: PACKAGE_DIR, encoding: "utf8" });
  const [pack] = JSON.parse(out) as { name: string; files: { path: string }[] }[];
  assert.equal(pack?.name, "@kaireon/compliance-client");
  const files = (pack?.files ?? []).map((f) => f.path).sort();
  for (const wanted of [
    "README.md",
    "package.json",
    "dist/index.js",
    "dist/index.d.ts",
    "dist/client.js",
    "dist/rest.d.ts",
    "dist/gen/kaireon/dsar/v1/dsar_pb.js",
    "dist/gen/kaireon/dsar/v1/dsar_pb.d.ts",
    "dist/gen/google/rpc/error_details_pb.js",
  ]) {
    assert.ok(files.includes(wanted), `${wanted} is missing from the tarball`);
  }
  const stray = files.filter((f) => !(f === "README.md" || f === "package.json" || f.startsWith("dist/")) || f.startsWith("dist/test/"));
  assert.deepEqual(stray, []);
});

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

const root = new URL("../../../", import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  version: string;
  bin: Record<string, string>;
};

// Every program package.json installs, by its bin entry: a new CLI is covered without editing this.
for (const [name, entry] of Object.entries(pkg.bin)) {
  test(`${name} --version prints package.json's version and exits 0`, () => {
    const out = execFileSync(process.execPath, [join(root, entry), "--version"], {
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, SIGNING_CONFIG: "", SIGNING_MONITOR_CONFIG: "" },
    });
    assert.equal(out, `${pkg.version}\n`);
  });
}

test("package.json names the four CLIs", () => {
  assert.deepEqual(Object.keys(pkg.bin).sort(), [
    "signing-admin",
    "signing-monitor",
    "signing-node",
    "signtool",
  ]);
});

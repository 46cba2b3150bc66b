import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";

/**
 * DESIGN.md §2's layers are enforced by the dependency checker in `npm run lint`
 * (.dependency-cruiser.cjs): it passes on the tree, and rejects a wrong-way import and a cycle
 * planted in a copy of its configuration.
 */
const root = new URL("../../../", import.meta.url).pathname;
const depcruise = join(root, "node_modules/.bin/depcruise");

function cruise(cwd: string, ...paths: string[]) {
  return spawnSync(depcruise, ["--config", ".dependency-cruiser.cjs", ...paths], { cwd, encoding: "utf8" });
}

test("the tree keeps its layers", () => {
  const r = cruise(root, "src", "monitor", "bench", "scripts", "test");
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("a store module importing a domain folder, and a cycle, are rejected by name", () => {
  const dir = mkdtempSync(join(tmpdir(), "layers-"));
  try {
    copyFileSync(join(root, ".dependency-cruiser.cjs"), join(dir, ".dependency-cruiser.cjs"));
    copyFileSync(join(root, "tsconfig.json"), join(dir, "tsconfig.json"));
    const files: Record<string, string> = {
      "src/store/records.ts": 'import { claimsOf } from "../tokens/codec.js";\nexport const x = claimsOf;\n',
      "src/tokens/codec.ts": "export const claimsOf = 1;\n",
      "src/signing/a.ts": 'import { b } from "../tokens/b.js";\nexport const a = () => b;\n',
      "src/tokens/b.ts": 'import { a } from "../signing/a.js";\nexport const b = () => a;\n',
      "src/http/edge.ts": 'import { c } from "../client/c.js";\nexport const e = c;\n',
      "src/client/c.ts": "export const c = 1;\n",
    };
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    const r = cruise(dir, "src");
    assert.notEqual(r.status, 0, r.stdout);
    assert.match(r.stdout, /store-imports-leaf: src\/store\/records\.ts → src\/tokens\/codec\.ts/);
    assert.match(r.stdout, /no-cycles: src\/signing\/a\.ts/);
    assert.match(r.stdout, /edges-apart: src\/http\/edge\.ts → src\/client\/c\.ts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

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

test("wrong-way imports (store to domain, folder cycles, edge to edge, monitor to tests) and a cycle are rejected by name", () => {
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
      // A cycle of folders without a cycle of files: tokens/x → signing/y, signing/z → tokens/w.
      "src/tokens/x.ts": 'import { y } from "../signing/y.js";\nexport const x = y;\n',
      "src/signing/y.ts": "export const y = 1;\n",
      "src/signing/z.ts": 'import { w } from "../tokens/w.js";\nexport const z = w;\n',
      "src/tokens/w.ts": "export const w = 1;\n",
      "monitor/m.ts": 'import { h } from "../test/helpers/h.js";\nexport const m = h;\n',
      "test/helpers/h.ts": "export const h = 1;\n",
    };
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    const r = cruise(dir, "src", "monitor", "test");
    assert.notEqual(r.status, 0, r.stdout);
    assert.match(r.stdout, /store-imports-leaf: src\/store\/records\.ts → src\/tokens\/codec\.ts/);
    assert.match(r.stdout, /no-cycles: src\/signing\/a\.ts/);
    assert.match(r.stdout, /edges-apart: src\/http\/edge\.ts → src\/client\/c\.ts/);
    assert.match(r.stdout, /tokens-apart-from-signing: src\/tokens\/x\.ts → src\/signing\/y\.ts/);
    assert.match(r.stdout, /monitor-self-contained: monitor\/m\.ts → test\/helpers\/h\.ts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

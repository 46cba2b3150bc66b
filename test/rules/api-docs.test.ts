import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ERROR_STATUS } from "../../src/http/errors.js";

const root = new URL("../../../", import.meta.url).pathname;

/** `| 503 | \`STORE_CORRUPT\` | …` rows of docs/api.md's error table: code → status. */
function documentedErrors(): Map<string, number> {
  const text = readFileSync(join(root, "docs/api.md"), "utf8");
  const table = text.slice(text.indexOf("## Errors"), text.indexOf("\n## ", text.indexOf("## Errors") + 1));
  const out = new Map<string, number>();
  for (const m of table.matchAll(/^\| (\d{3}) \| `([A-Z_]+)` \|/gm)) {
    assert.ok(!out.has(m[2] as string), `${m[2]} is documented twice`);
    out.set(m[2] as string, Number(m[1]));
  }
  return out;
}

test("docs/api.md's error table lists exactly the codes a node answers, each with its status", () => {
  const documented = documentedErrors();
  const code = new Map(Object.entries(ERROR_STATUS));
  assert.deepEqual([...documented.keys()].sort(), [...code.keys()].sort());
  for (const [name, status] of code) assert.equal(documented.get(name), status, name);
});

test("the README sends readers to the API reference", () => {
  assert.match(readFileSync(join(root, "README.md"), "utf8"), /\(docs\/api\.md\)/);
});

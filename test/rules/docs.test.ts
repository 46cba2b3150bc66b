import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { test } from "node:test";
import { PERFORMANCE_DOC, renderResults, withResults } from "../../bench/report.js";
import { monitorConfigSchema } from "../../monitor/config.js";
import { CONFIG_DOCS, configKeys, renderConfigDocs } from "../../scripts/config-docs.js";
import { configSchema } from "../../src/config/schema.js";

const root = new URL("../../../", import.meta.url).pathname;
const readme = () => readFileSync(join(root, "README.md"), "utf8");

/** Every markdown page an operator may land on: the README, docs/, runbooks/, the kit's READMEs. */
function pages(): string[] {
  const under = (dir: string) =>
    readdirSync(join(root, dir))
      .filter((f) => f.endsWith(".md"))
      .map((f) => join(dir, f));
  return ["README.md", ...under("docs"), ...under("runbooks"), "grafana/README.md", "bench/README.md"];
}

test("the README is a front door: the two commands first, at most ~25 KB", () => {
  const text = readme();
  assert.ok(Buffer.byteLength(text) <= 25 * 1024, `README.md is ${Buffer.byteLength(text)} bytes`);
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(text)?.[1] ?? "";
  assert.match(firstBlock, /^npm ci && npm start\b/m, "the first command starts a local cluster");
  assert.match(firstBlock, /^npm test\b/m, "the second runs the tests");
  assert.match(
    readFileSync(join(root, ".ci/run"), "utf8"),
    /^npm test$/m,
    ".ci/run runs the README's test command",
  );
});

test("every docs/ page is linked from the README", () => {
  const text = readme();
  for (const page of readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md"))) {
    assert.ok(text.includes(`(docs/${page})`), `README.md does not link docs/${page}`);
  }
});

test("every relative link in the docs points at a file that exists", () => {
  const broken: string[] = [];
  for (const page of pages()) {
    const text = readFileSync(join(root, page), "utf8").replace(/```[\s\S]*?```/g, "");
    for (const m of text.matchAll(/\]\(([^)\s#]+)(#[^)]*)?\)/g)) {
      const target = m[1] as string;
      if (/^[a-z]+:/.test(target)) continue; // http:, https:, mailto:
      const path = join(root, dirname(page), target);
      if (!existsSync(path) || (target.endsWith("/") && !statSync(path).isDirectory())) {
        broken.push(`${page} → ${target} (${relative(root, path)})`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

test("docs/configuration.md is what the schemas say (npm run docs rewrites it)", () => {
  assert.equal(
    readFileSync(CONFIG_DOCS, "utf8"),
    renderConfigDocs(),
    "docs/configuration.md is stale: npm run docs",
  );
});

test("docs/performance.md's results table is what bench/results/*.json say (npm run bench rewrites both)", () => {
  const doc = readFileSync(PERFORMANCE_DOC, "utf8");
  assert.equal(
    doc,
    withResults(doc, renderResults()),
    "docs/performance.md is stale: node dist/bench/report.js",
  );
});

test("every configuration key says what it means", () => {
  for (const [name, schema] of [
    ["signing-node", configSchema],
    ["signing-monitor", monitorConfigSchema],
  ] as const) {
    const silent = configKeys(schema)
      .filter((k) => !k.description)
      .map((k) => k.path);
    assert.deepEqual(silent, [], `${name}: keys without a .describe() in the schema`);
  }
});

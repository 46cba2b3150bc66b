import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { stringify } from "yaml";
import { exportedMetricNames, metricsInQuery } from "../helpers/exported-metrics.js";

const root = new URL("../../../", import.meta.url).pathname;
const dir = join(root, "runbooks");
const admin = join(root, "dist/src/bin/signing-admin.js");
const runbooks = readdirSync(dir).filter((f) => f.endsWith(".md"));

function blocks(text: string, lang: string): string[] {
  return [...text.matchAll(new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``, "g"))].map((m) => m[1] as string);
}

/** The subcommand path of a `signing-admin …` line: options and arguments dropped. */
function subcommand(line: string): string[] {
  const words = line.replace(/^signing-admin\s+/, "").split(/\s+/);
  const path: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i] as string;
    if (w.startsWith("--")) {
      // Global options that take a value.
      if (["--cluster", "--redis", "--node", "--monitor", "--prefix", "--state-dir"].includes(w)) i++;
      continue;
    }
    if (!/^[a-z][a-z-]*$/.test(w) || path.length === 2) break;
    path.push(w);
  }
  return path;
}

test("runbooks have Meaning, Impact, Diagnosis, Mitigation and their local-cluster variant, in that order", () => {
  assert.ok(runbooks.length >= 11);
  for (const f of runbooks.filter((f) => f !== "README.md")) {
    const text = readFileSync(join(dir, f), "utf8");
    assert.match(text, new RegExp(`^# ${f.replace(/\.md$/, "")}\\b`), f);
    const at = ["Meaning", "Impact", "Diagnosis", "Mitigation", "On the local cluster (npm start)"].map((s) =>
      text.indexOf(`\n## ${s}`),
    );
    assert.ok(
      at.every((i) => i > 0) && at.every((v, i) => i === 0 || v > (at[i - 1] as number)),
      `${f}: sections`,
    );
  }
});

test("every signing-admin command in the runbooks exists (its --help works)", () => {
  const checked = new Map<string, number | null>();
  let count = 0;
  for (const f of runbooks) {
    for (const block of blocks(readFileSync(join(dir, f), "utf8"), "sh")) {
      for (const whole of block.split("\n").map((l) => l.trim())) {
        // Also after `ssh <monitor-host> sudo -u signing …`.
        const at = whole.search(/(^|\s)signing-admin\s/);
        if (at < 0) continue;
        const line = whole.slice(at).trim();
        count++;
        const path = subcommand(line);
        assert.ok(path.length > 0, `${f}: no subcommand in "${line}"`);
        // "tokens list": try the two-word path, else the first word (then the second is an argument).
        for (const p of [path, path.slice(0, 1)]) {
          const key = p.join(" ");
          if (!checked.has(key))
            checked.set(
              key,
              spawnSync(process.execPath, [admin, ...p, "--help"], { encoding: "utf8" }).status,
            );
        }
        const ok =
          checked.get(path.join(" ")) === 0 ||
          (path.length === 2 && checked.get(path[0] as string) === 0 && !isGroup(path[0] as string));
        assert.ok(ok, `${f}: "${line}" is not a signing-admin command`);
      }
    }
  }
  assert.ok(count >= 10, `runbooks use the admin CLI (${count} commands)`);
});

function isGroup(word: string): boolean {
  const help = spawnSync(process.execPath, [admin, word, "--help"], { encoding: "utf8" }).stdout;
  return /\nCommands:/.test(help);
}

test("every PromQL query in the runbooks parses and uses exported metrics", async () => {
  const exported = await exportedMetricNames();
  const queries: { file: string; expr: string }[] = [];
  for (const f of runbooks) {
    for (const block of blocks(readFileSync(join(dir, f), "utf8"), "promql")) {
      for (const expr of block
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean))
        queries.push({ file: f, expr });
    }
  }
  assert.ok(queries.length >= 10, `runbooks carry queries (${queries.length})`);
  for (const q of queries) {
    for (const m of metricsInQuery(q.expr))
      assert.ok(exported.has(m), `${q.file}: ${m} is not exported (${q.expr})`);
  }
  const tmp = mkdtempSync(join(tmpdir(), "runbook-promql-"));
  try {
    const rules = {
      groups: [
        { name: "runbooks", rules: queries.map((q, i) => ({ record: `runbook:q${i}`, expr: q.expr })) },
      ],
    };
    writeFileSync(join(tmp, "rules.yml"), stringify(rules));
    const r = spawnSync("promtool", ["check", "rules", join(tmp, "rules.yml")], { encoding: "utf8" });
    if (r.error) throw new Error(`cannot run promtool (${r.error.message}): install the prometheus package`);
    assert.equal(
      r.status,
      0,
      `${r.stdout}${r.stderr}\n${queries.map((q, i) => `q${i} ${q.file}: ${q.expr}`).join("\n")}`,
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

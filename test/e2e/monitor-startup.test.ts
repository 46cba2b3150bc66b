import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

/**
 * signing-monitor refuses to start over what the operator must fix, as the node does: one
 * line naming it on stderr, exit 2, no stack trace.
 */
const root = new URL("../../../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signing-monitor-startup-"));
after(() => rmSync(work, { recursive: true, force: true }));

/** Runs signing-monitor on a config until it exits (it should: these configs cannot start). */
function runMonitor(config: string): Promise<{ code: number | null; stderr: string }> {
  const file = join(work, `monitor-${Math.random().toString(16).slice(2)}.yaml`);
  writeFileSync(file, config);
  const child = spawn(process.execPath, [join(root, "dist/monitor/bin.js"), "--config", file], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  return new Promise((resolve) =>
    child.on("exit", (code) => {
      clearTimeout(killer);
      resolve({ code, stderr });
    }),
  );
}

// No Redis needed: the monitor starts without it (and alerts RedisUnreachable); 1 s to give up.
const redis =
  'redis: { url: "redis://127.0.0.1:1", connectTimeoutMs: 500 }\nalerts: { enabled: false }\nlog: { level: silent }\n';

test("a monitor port another process listens on: PORT_IN_USE in one line, exit 2", async () => {
  const taken = createServer();
  await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
  const port = (taken.address() as { port: number }).port;
  try {
    const r = await runMonitor(`monitor: { stateDir: ${join(work, "state")}, port: ${port} }\n${redis}`);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(
      r.stderr,
      `signing-monitor: monitor.port ${port} on 127.0.0.1 is already in use (another monitor running?)\n`,
    );
  } finally {
    taken.close();
  }
});

test("a state dir that cannot be created: CONFIG_INVALID in one line, exit 2", async () => {
  const file = join(work, "a-file");
  writeFileSync(file, "");
  const r = await runMonitor(`monitor: { stateDir: ${join(file, "state")}, port: 0 }\n${redis}`);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(
    r.stderr,
    `signing-monitor: monitor.stateDir ${join(file, "state")} cannot be used: ENOTDIR\n`,
  );
});

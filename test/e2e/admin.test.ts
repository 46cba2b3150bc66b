import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { RunningMonitor } from "../../monitor/monitor.js";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { verifyPassword } from "../../src/tokens/credentials.js";
import { tokenHash } from "../../src/tokens/service.js";
import { type Run, runAdmin } from "../helpers/admin-cli.js";
import { getToken, upload } from "../helpers/api.js";
import { startTestMonitor } from "../helpers/monitor.js";

const work = mkdtempSync(join(tmpdir(), "signing-admin-e2e-"));
const stateDir = join(work, "monitor-state");
const clusterFile = join(work, "cluster.json");
let cluster: ProcessCluster;
let monitor: RunningMonitor | undefined;

/** The real CLI as a subprocess; killed if it does not exit on its own (it must). */
function admin(args: string[], input?: string): Promise<Run> {
  return runAdmin(args, { cwd: work, timeoutMs: 30_000, ...(input === undefined ? {} : { input }) });
}

/** With the cluster file, and the monitor's state dir for the snapshot. */
const run = (...args: string[]) => admin(["--cluster", clusterFile, ...args]);

const auth = () =>
  `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`;
const url = (i: number) => cluster.urls[i] as string;
const idOf = (token: string) =>
  (JSON.parse(Buffer.from(token.split(".")[2] ?? "", "base64url").toString()) as { id: string }).id;

/** Waits until every node's breakers are closed again (readyz ok), so a check really asks Redis. */
async function nodesReady(): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const states = await Promise.all(
      cluster.urls.map(async (u) => {
        try {
          return ((await (await fetch(`${u}/readyz`)).json()) as { status: string }).status;
        } catch {
          return "unreachable";
        }
      }),
    );
    if (states.every((s) => s === "ok")) return;
    await sleep(100);
  }
  throw new Error("nodes never became ready");
}

async function uploadWith(token: string): Promise<{ status: number; code?: string }> {
  const res = await upload(url(1), { token, nonce: "", data: randomBytes(64) });
  return { status: res.status, code: (res.body as { error?: { code?: string } })?.error?.code };
}

const tokens: string[] = [];

before(async () => {
  cluster = await ProcessCluster.start({ nodes: 2 });
  monitor = await startTestMonitor({ redisUrl: cluster.redis.url, nodes: cluster.urls, stateDir });
  writeFileSync(
    clusterFile,
    JSON.stringify({
      redisUrl: cluster.redis.url,
      nodes: cluster.urls,
      monitor: monitor.url,
      issuer: { user: cluster.state.issuer.user, passwordFile: cluster.state.issuer.passwordFile },
    }),
  );
  for (let i = 0; i < 3; i++) tokens.push(await getToken(url(i % 2), auth()));
  // The monitor's own snapshot (every second) holds them before the tests look at it.
  for (let i = 0; i < 100 && !existsSync(join(stateDir, "snapshot.json")); i++) await sleep(100);
  await monitor.snapshotNow();
});

after(async () => {
  await monitor?.close().catch(() => {});
  await cluster?.stop().catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

describe("signing-admin against two real nodes, a monitor and Redis", () => {
  test("--help works for every subcommand; an unknown subcommand is a usage error", async () => {
    const commands = [
      [],
      ["status"],
      ["tokens"],
      ["tokens", "list"],
      ["tokens", "show"],
      ["tokens", "revoke"],
      ["keys"],
      ["keys", "list"],
      ["keys", "test"],
      ["epoch"],
      ["epoch", "show"],
      ["reseed"],
      ["invalidate"],
      ["snapshot"],
      ["hash-password"],
    ];
    for (const c of commands) {
      const r = await admin([...c, "--help"]);
      assert.equal(r.code, 0, `${c.join(" ")} --help: ${r.stderr}`);
      assert.match(r.stdout, /^Usage: signing-admin/, c.join(" "));
    }
    const bad = await admin(["frobnicate"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown command 'frobnicate'/);
    const badOption = await run("status", "--no-such-option");
    assert.equal(badOption.code, 2);
  });

  test("status: both nodes ok, Redis, epoch, monitor and snapshot shown; exit 0", async () => {
    const r = await run("status", "--state-dir", stateDir);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const epoch = JSON.parse((await run("epoch", "show", "--json")).stdout).epoch.id;
    for (const u of cluster.urls) assert.match(r.stdout, new RegExp(`${u}\\s+ok\\s+`));
    assert.match(r.stdout, new RegExp(`epoch\\s+${epoch} fresh`));
    assert.match(r.stdout, /role\s+master/);
    assert.match(r.stdout, /token_reads=closed token_writes=closed jobs=closed/);
    assert.match(r.stdout, /SNAPSHOT/);
    assert.match(r.stdout, /status: ok/);
  });

  test("status --json: one object with every part", async () => {
    // Global options also work after the subcommand.
    const r = await admin(["status", "--cluster", clusterFile, "--json", "--state-dir", stateDir]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.ok, true);
    assert.deepEqual(s.problems, []);
    assert.equal(s.nodes.length, 2);
    for (const [i, n] of s.nodes.entries()) {
      assert.equal(n.url, url(i));
      assert.equal(n.ready, "ok");
      assert.equal(n.nodeId, `node-${i}`);
      assert.ok(n.version);
      assert.deepEqual(n.breakers, { token_reads: "closed", token_writes: "closed", jobs: "closed" });
      assert.deepEqual(
        n.keys.map((k: { format: string }) => k.format),
        ["gpg", "gpg-clearsign", "sshsig", "minisign"],
      );
    }
    assert.equal(s.redis.role, "master");
    assert.match(s.redis.runId, /^[0-9a-f]{40}$/);
    assert.ok(s.redis.uptimeSeconds >= 0);
    assert.equal(s.redis.epoch.state, "fresh");
    assert.ok(s.redis.liveTokens >= 3);
    assert.equal(s.monitor.status, "ok");
    assert.equal(s.snapshot.present, true);
    assert.ok(s.snapshot.tokens >= 3);
    assert.ok(s.snapshot.ageSeconds < 60);
  });

  test("tokens list: the issued tokens by hash, never a raw token or id", async () => {
    const r = await run("tokens", "list", "--json");
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout);
    const hashes = list.tokens.map((t: { hash: string }) => t.hash);
    for (const t of tokens) assert.ok(hashes.includes(tokenHash(idOf(t))));
    const one = list.tokens.find((t: { hash: string }) => t.hash === tokenHash(idOf(tokens[0] as string)));
    assert.equal(one.issuer, cluster.state.issuer.user);
    assert.equal(one.ip, "127.0.0.1");
    assert.equal(one.node, "node-0");
    assert.equal(one.healed, false);
    assert.ok(one.ttlSeconds > 500 && one.ttlSeconds <= 600);
    assert.match(one.expiresAt, /^\d{4}-\d\d-\d\dT/);
    const human = await run("tokens", "list", "--limit", "2");
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /HASH\s+ISSUER\s+IP\s+ISSUED\s+EXPIRES\s+NODE\s+HEALED\s+TTL/);
    assert.match(human.stdout, /2 of \d+ shown/);
    const shown = await run("tokens", "show", tokenHash(idOf(tokens[0] as string)));
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /issuing node\s+node-0/);
    for (const out of [r.stdout, human.stdout, shown.stdout])
      for (const t of tokens) {
        assert.ok(!out.includes(t), "no token in the output");
        assert.ok(!out.includes(idOf(t)), "no token id in the output");
      }
    const withIds = await run("tokens", "list", "--json", "--show-ids");
    assert.ok(withIds.stdout.includes(idOf(tokens[0] as string)), "--show-ids shows them");
  });

  test("tokens revoke <token>: an upload with it then answers 401 TOKEN_REVOKED", async () => {
    const token = await getToken(url(0), auth());
    await nodesReady();
    const r = await run("tokens", "revoke", token);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`revoked token ${tokenHash(idOf(token))}`));
    assert.match(r.stdout, /the primary has no replicas/);
    assert.ok(!r.stdout.includes(idOf(token)));
    assert.deepEqual(await uploadWith(token), { status: 401, code: "TOKEN_REVOKED" });
    const shown = await run("tokens", "show", tokenHash(idOf(token)), "--json");
    assert.equal(JSON.parse(shown.stdout).revoked.reason, "revoked by signing-admin");
    const bad = await run("tokens", "revoke", "not-a-token");
    assert.equal(bad.code, 2);
  });

  test("epoch show: the record and what its state means", async () => {
    const r = await run("epoch", "show");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /state\s+fresh/);
    assert.match(r.stdout, /\* fresh\s+nobody has acted/);
    const j = JSON.parse((await run("epoch", "show", "--json")).stdout);
    assert.equal(j.epoch.state, "fresh");
    assert.match(j.epoch.id, /^[0-9a-f]{16}$/);
  });

  test("status exits 1 when a node is stopped", async () => {
    await cluster.nodes[1]?.stop("SIGTERM");
    try {
      const r = await run("status");
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stdout, new RegExp(`${url(1)}\\s+unreachable`));
      assert.match(r.stdout, new RegExp(`node ${url(1)} is unreachable`));
      const j = JSON.parse((await run("status", "--json")).stdout);
      assert.equal(j.ok, false);
      assert.equal(j.nodes[0].ready, "ok");
      assert.equal(j.nodes[1].ready, "unreachable");
    } finally {
      await cluster.restart(1);
    }
  });

  test("hash-password: the hash verifies", async () => {
    const r = await admin(["hash-password"], "correct horse battery\n");
    assert.equal(r.code, 0, r.stderr);
    const hash = r.stdout.trim();
    assert.ok(await verifyPassword("correct horse battery", hash));
    assert.ok(!(await verifyPassword("wrong", hash)));
    assert.equal((await admin(["hash-password"], "")).code, 1);
  });

  test("snapshot, Redis restarts empty, reseed puts the tokens back; invalidate then refuses old ones", async () => {
    const snapFile = join(work, "snap.json");
    const s = await run("snapshot", "--out", snapFile);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /written to .*snap\.json: \d+ tokens/);
    // Only the CLI acts on this data loss.
    await monitor?.close();
    monitor = undefined;
    // Issued after the snapshot: not in it, so lost for good with Redis.
    const late = await getToken(url(0), auth());
    await cluster.redis.restart();
    await nodesReady();

    const r = await run("reseed", "--from", snapFile);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /tokens\s+\d+ of \d+/);
    assert.match(r.stdout, /fresh → restored/);
    const shown = JSON.parse(
      (await run("tokens", "show", tokenHash(idOf(tokens[1] as string)), "--json")).stdout,
    );
    assert.equal(shown.record.healed, false, "the record came back from the snapshot, not by healing");
    assert.deepEqual(await uploadWith(tokens[1] as string), { status: 202, code: undefined });
    assert.equal(JSON.parse((await run("epoch", "show", "--json")).stdout).epoch.state, "restored");

    const inv = await run("invalidate", "--before", "now");
    assert.equal(inv.code, 0, inv.stderr);
    assert.match(inv.stdout, /state\s+restored → invalidated/);
    assert.match(inv.stdout, /minIat\s+unset → \d{4}-/);
    assert.match(inv.stdout, /every token issued before .* now gets 401 TOKEN_INVALIDATED/);
    const e = JSON.parse((await run("epoch", "show", "--json")).stdout).epoch;
    assert.equal(e.state, "invalidated");
    assert.ok(Date.now() - Date.parse(e.minIat) < 60_000);
    await nodesReady();
    assert.deepEqual(await uploadWith(late), { status: 401, code: "TOKEN_INVALIDATED" });
    // Restored records are older too: issued before minIat, so they are refused as well.
    assert.deepEqual(await uploadWith(tokens[1] as string), { status: 401, code: "TOKEN_INVALIDATED" });

    const refused = await run("reseed", "--from", snapFile);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /is invalidated.*--force/);
    const bad = await run("invalidate", "--before", "last tuesday");
    assert.equal(bad.code, 2);
  });

  test("unreachable Redis: exit 1 with the URL and the reason", async () => {
    // Port 1: nothing listens there (a "free" port can be taken by a test running alongside).
    const dead = "redis://127.0.0.1:1";
    const r = await admin(["epoch", "show", "--redis", dead]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach Redis at ${dead}: .*ECONNREFUSED`));
  });
});

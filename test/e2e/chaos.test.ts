import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import request from "supertest";
import { ChaosRig, formatReport, MASTER_NAME, type ScenarioReport } from "../../scripts/chaos-rig.js";
import { startAtNode } from "../../scripts/signing-load.js";
import {
  type ClientEvent,
  SigningClient,
  type SigningClientOptions,
} from "../../src/client/signing-client.js";
import { getToken, sha256, upload } from "../helpers/api.js";
import { minimalPe, osslsigncodeVerify, powershellScript } from "../helpers/authenticode.js";
import { startScriptedNode } from "../helpers/hostile-node.js";
import { sample } from "../helpers/metrics.js";
import { waitForReplica } from "../helpers/redis.js";

/**
 * The promise, under faults: a Redis failover, a Redis restart, a paused Redis, lost nodes,
 * a lost monitor, a full Redis, the node holding signed files lost. Each scenario runs signtool
 * clients through it and reports.
 */
const ADMIN = new URL("../../src/bin/signing-admin.js", import.meta.url).pathname;
const reports: ScenarioReport[] = [];
after(() => {
  // What each scenario attempted, failed and retried: the figures docs/operations.md's
  // "Failure modes" table leaves to the run.
  if (reports.length) console.log(`\n${reports.map(formatReport).join("\n")}\n`);
});

function assertNoFailures(r: ScenarioReport): void {
  reports.push(r);
  assert.equal(r.failed, 0, `${r.scenario}: ${r.errors.slice(0, 5).join("\n")}`);
  assert.ok(r.signed > 0, `${r.scenario}: nothing was signed`);
}

/**
 * Makes the next writes stay on the primary: a stopped replica's socket buffers still take
 * what the primary sends (up to tens of MiB on loopback), and the replica would apply it when
 * resumed. Writes queued behind this much are in the primary's own output buffer, and die
 * with it.
 */
async function fillReplicationBuffers(rig: ChaosRig): Promise<void> {
  const primary = new Redis(rig.primary.url);
  try {
    const mib = Buffer.alloc(1024 * 1024, 120);
    for (let i = 0; i < 96; i++) await primary.set(`chaos:ballast:${i}`, mib);
  } finally {
    primary.disconnect();
  }
}

/** Waits until the Sentinels name the (former) replica as the primary. */
async function untilPromoted(rig: ChaosRig): Promise<void> {
  const sentinel = new Redis(rig.sentinels[0]?.port ?? 0);
  try {
    await until(
      "the replica promoted",
      async () => {
        const addr = (await sentinel.call("SENTINEL", "get-master-addr-by-name", MASTER_NAME)) as string[];
        return addr[1] === String(rig.replica?.port);
      },
      30_000,
    );
  } finally {
    sentinel.disconnect();
  }
}

async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe("Redis Sentinel: primary, replica, three sentinels", () => {
  let rig: ChaosRig;
  before(async () => {
    rig = await ChaosRig.start({ sentinel: true });
  });
  after(() => rig?.stop());

  test("1. kill -9 the Redis primary: Sentinel fails over, no job fails, the monitor says failover", async (t) => {
    const r = await rig.scenario("1. kill -9 primary, Sentinel failover", async () => {
      await rig.primary.kill();
      const sentinel = new Redis(rig.sentinels[0]?.port ?? 0);
      try {
        await until("a new primary", async () => {
          const addr = (await sentinel.call("SENTINEL", "get-master-addr-by-name", MASTER_NAME)) as string[];
          return addr[1] === String(rig.replica?.port);
        });
      } finally {
        sentinel.disconnect();
      }
    });
    t.diagnostic(formatReport(r));
    assertNoFailures(r);
    await until(
      "the monitor to classify the failover",
      async () => (await rig.monitorMetric("signing_monitor_redis_restarts_total", 'kind="failover"')) >= 1,
    );
    assert.equal(await rig.monitorMetric("signing_monitor_redis_restarts_total", 'kind="data_loss"'), 0);
    // signing-admin through the Sentinels finds the new primary.
    const status = spawnSync(
      process.execPath,
      [ADMIN, "--cluster", rig.writeClusterFile(), "--json", "status"],
      { encoding: "utf8" },
    );
    const json = JSON.parse(status.stdout);
    assert.equal(json.redis.role, "master", status.stdout);
  });
});

describe("Redis Sentinel: writes the primary took but never replicated", () => {
  let rig: ChaosRig;
  before(async () => {
    rig = await ChaosRig.start({ sentinel: true, nodeEnv: { SIGNING__store__replicaAckTimeoutMs: "500" } });
  });
  after(() => rig?.stop());

  test("7. replica stopped, a token issued and another revoked, primary killed: the token signs, the revocation holds or was never acknowledged", async (t) => {
    const auth = `Basic ${Buffer.from(`${rig.state.issuer.user}:${rig.state.issuer.password}`).toString("base64")}`;
    const [a, b] = rig.urls as [string, string];
    const toRevoke = await getToken(a, auth);
    await waitForReplica(rig.primary.url);
    let issued = "";
    let revokeStatus = 0;
    const r = await rig.scenario("7. un-replicated token and revocation, failover", async () => {
      rig.replica?.pause();
      try {
        await fillReplicationBuffers(rig);
        issued = await getToken(a, auth);
        const revoke = await request(a)
          .post("/token")
          .set("Authorization", auth)
          .type("form")
          .send({ expire: toRevoke });
        revokeStatus = revoke.status;
        await rig.primary.kill();
      } finally {
        rig.replica?.resume();
      }
      await untilPromoted(rig);
    });
    t.diagnostic(`${formatReport(r)}; revocation answered ${revokeStatus}`);
    assertNoFailures(r);
    // The replica never had the write: the revocation was not acknowledged.
    assert.equal(revokeStatus, 503, "no replica acknowledged the revocation, so it was not acknowledged");
    const redis = rig.redis();
    try {
      const id = JSON.parse(Buffer.from(issued.split(".")[2] as string, "base64url").toString()).id;
      assert.equal(
        await redis.exists(`signing:token:{${id}}`),
        0,
        "the promoted replica never had the token",
      );
    } finally {
      redis.disconnect();
    }
    const signed = await upload(b, { token: issued, nonce: "", data: randomBytes(32) });
    assert.equal(signed.status, 202, `the token issued before the failover still signs: ${signed.text}`);
    const revoked = await upload(b, { token: toRevoke, nonce: "", data: randomBytes(32) });
    assert.ok(
      revoked.status === 202 || revoked.body.error.code === "TOKEN_REVOKED",
      "an unacknowledged revocation may be lost; an acknowledged one holds",
    );
    // With the replica back, a revocation is acknowledged and holds.
    const again = await request(b)
      .post("/token")
      .set("Authorization", auth)
      .type("form")
      .send({ expire: toRevoke });
    assert.equal(again.status, 200, again.text);
    const refused = await upload(a, { token: toRevoke, nonce: "", data: randomBytes(32) });
    assert.equal(refused.body.error?.code, "TOKEN_REVOKED");
  });
});

describe("standalone Redis", () => {
  let rig: ChaosRig;
  before(async () => {
    rig = await ChaosRig.start({ nodeEnv: { SIGNING__store__commandTimeoutMs: "500" } });
  });
  after(() => rig?.stop());

  test("2. Redis restarts empty: the monitor re-seeds, no job fails", async (t) => {
    const r = await rig.scenario("2. Redis restart without data (re-seed)", async () => {
      await rig.primary.kill();
      await sleep(300);
      await rig.primary.restart();
    });
    t.diagnostic(formatReport(r));
    assertNoFailures(r);
    assert.ok((await rig.monitorMetric("signing_monitor_redis_restarts_total", 'kind="data_loss"')) >= 1);
    assert.ok((await rig.monitorMetric("signing_monitor_tokens_reseeded_total")) >= 1);
  });

  test("3. Redis paused (SIGSTOP) longer than the command timeout, then resumed", async (t) => {
    const r = await rig.scenario("3. Redis paused 3 s (command timeout 0.5 s)", async () => {
      rig.primary.pause();
      await sleep(3000);
      rig.primary.resume();
    });
    t.diagnostic(formatReport(r));
    assertNoFailures(r);
  });

  test("4. kill -9 one signing node, then SIGTERM another", async (t) => {
    let graceful: number | null = null;
    const r = await rig.scenario("4. kill -9 a node, SIGTERM another", async () => {
      rig.nodes[0]?.child.kill("SIGKILL");
      await sleep(1000);
      const second = rig.nodes[1];
      assert.ok(second);
      const exited = new Promise<number | null>((res) => second.child.once("exit", (code) => res(code)));
      second.child.kill("SIGTERM");
      graceful = await exited;
    });
    t.diagnostic(formatReport(r));
    assertNoFailures(r);
    assert.equal(graceful, 0, "the SIGTERMed node drained and exited 0");
    await rig.restartNode(0);
    await rig.restartNode(1);
  });

  test("5. the monitor is killed during a data-loss restart: nodes heal tokens, the monitor catches up", async (t) => {
    const r = await rig.scenario(
      "5. monitor killed during data-loss restart",
      async () => {
        await rig.monitor?.stop("SIGKILL");
        await rig.primary.kill();
        await sleep(300);
        await rig.primary.restart();
        // Nodes alone: 503 STORE_RECOVERING for recoveryGraceMs (3 s), then orphanPolicy heal.
        await sleep(4000);
        await rig.startMonitor();
      },
      3000,
    );
    t.diagnostic(formatReport(r));
    assertNoFailures(r);
    const redis = rig.redis();
    try {
      await until(
        "the restarted monitor to settle the epoch",
        async () => (await redis.hget("signing:epoch", "state")) === "restored",
      );
    } finally {
      redis.disconnect();
    }
  });

  test("6. Redis out of memory: clear 503s for new tokens, signing goes on, no corrupted data", async (t) => {
    const redis = rig.redis();
    try {
      const epochBefore = await redis.hgetall("signing:epoch");
      let tokenAnswer = 0;
      let tokenCode = "";
      const r = await rig.scenario("6. Redis maxmemory reached (OOM on writes)", async () => {
        const used = Number(/used_memory:(\d+)/.exec(await redis.info("memory"))?.[1]);
        await redis.config("SET", "maxmemory-policy", "noeviction");
        await redis.config("SET", "maxmemory", String(used - 1024));
        const res = await fetch(`${rig.urls[0]}/token`, {
          method: "POST",
          headers: {
            Authorization: `Basic ${Buffer.from(`${rig.state.issuer.user}:${rig.state.issuer.password}`).toString("base64")}`,
            "Content-Type": "application/x-www-form-urlencoded",
          },
          body: "slave_ip=127.0.0.1&duration=600",
        });
        tokenAnswer = res.status;
        tokenCode = ((await res.json()) as { error: { code: string } }).error.code;
        await sleep(3000);
        await redis.config("SET", "maxmemory", "0");
      });
      t.diagnostic(formatReport(r));
      assertNoFailures(r);
      assert.equal(tokenAnswer, 503);
      assert.equal(tokenCode, "STORE_UNAVAILABLE");
      // Nothing half-written: the epoch is the same, every token record and chain parses.
      assert.deepEqual(await redis.hgetall("signing:epoch"), epochBefore);
      for (const key of await redis.keys("signing:token:*")) JSON.parse((await redis.get(key)) ?? "");
      for (const key of await redis.keys("signing:nonce:*"))
        assert.match((await redis.hget(key, "n")) ?? "", /^\d+$/);
      for (const url of rig.urls) {
        const metrics = await (await fetch(`${url}/metrics`)).text();
        assert.doesNotMatch(
          metrics,
          /signing_requests_total\{format="\w+",outcome="error"\} [1-9]/,
          `${url}: no 500s`,
        );
      }
    } finally {
      await redis.config("SET", "maxmemory", "0").catch(() => {});
      redis.disconnect();
    }
  });
});

type EmbeddedInput = { ext: string; bytes: Buffer };

/** A minimal PE, or a PowerShell script, of its own: `tag` makes its digest differ. */
function taggedInput(kind: "exe" | "ps1", tag: string): EmbeddedInput {
  if (kind === "ps1")
    return { ext: ".ps1", bytes: Buffer.concat([powershellScript(), Buffer.from(`# ${tag}\r\n`)]) };
  const pe = minimalPe();
  pe.write(tag, 0x300, "latin1");
  return { ext: ".exe", bytes: pe };
}

/**
 * What the Authenticode clients sign: every other job a fresh PE or PowerShell script, the
 * others a repeat of an input signed before, so nodes are asked for outputs another node holds
 * (or held, until it was killed).
 */
class EmbeddedInputs {
  private readonly run = randomBytes(4).toString("hex");
  private readonly made = new Map<string, EmbeddedInput>();
  private repeats: EmbeddedInput[] = [];
  private fixed = false;
  private turn = 0;

  next(client: number, n: number): EmbeddedInput {
    if (n % 2 === 1 && this.repeats.length > 0)
      return this.repeats[this.turn++ % this.repeats.length] as EmbeddedInput;
    const input = taggedInput(n % 4 === 0 ? "ps1" : "exe", `${this.run}-${client}-${n}`);
    this.made.set(sha256(input.bytes), input);
    if (!this.fixed) this.repeats.push(input);
    return input;
  }

  /** From now on the repeats are of these inputs only (by sha256); returns how many it made. */
  repeatOnly(sha256s: readonly string[]): number {
    this.fixed = true;
    this.repeats = sha256s.flatMap((s) => this.made.get(s) ?? []);
    this.turn = 0;
    return this.repeats.length;
  }
}

/** The input sha256 of each signed file, by the node that holds it (as its result record names it). */
async function filesByOwner(rig: ChaosRig): Promise<Map<string, string[]>> {
  const redis = rig.redis();
  try {
    const byOwner = new Map<string, string[]>();
    for (const key of await redis.keys("signing:result:authenticode:*")) {
      const owner = (await redis.hget(key, "owner")) ?? "";
      byOwner.set(owner, [...(byOwner.get(owner) ?? []), key.slice(key.lastIndexOf(":") + 1)]);
    }
    return byOwner;
  } finally {
    redis.disconnect();
  }
}

/** GETs of signed files by where each came from (local, peer, missing, unreachable), summed over the nodes. */
async function fileResultFetches(rig: ChaosRig): Promise<Record<string, number>> {
  const sum: Record<string, number> = {};
  for (const url of rig.urls) {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const result of ["local", "peer", "missing", "unreachable"]) {
      const labels = { format: "authenticode", result };
      sum[result] = (sum[result] ?? 0) + (sample(text, "signing_file_result_fetches_total", labels) ?? 0);
    }
  }
  return sum;
}

/** `osslsigncode verify` against the dev CA, of every file: the ones that fail, with its words. */
function unverified(files: readonly string[], caFile: string): string[] {
  return files.flatMap((f) => {
    const v = osslsigncodeVerify(f, caFile);
    return v.ok ? [] : [`${f}: ${v.output}`];
  });
}

describe("Authenticode: each signed file on the disk of the node that signed it", () => {
  let rig: ChaosRig;
  let work: string;
  before(async () => {
    rig = await ChaosRig.start({ authenticode: true });
    work = join(rig.dir, "embedded");
    mkdirSync(work);
  });
  after(() => rig?.stop());
  const caFile = () => rig.state.codeSigning?.caFile as string;
  const auth = () =>
    `Basic ${Buffer.from(`${rig.state.issuer.user}:${rig.state.issuer.password}`).toString("base64")}`;

  /** A client of its own (token and nonce files) on `nodes`. */
  async function client(name: string, nodes: string[], opts: Partial<SigningClientOptions> = {}) {
    const tokenFile = join(work, `${name}.token`);
    writeFileSync(tokenFile, await getToken(nodes.at(-1) as string, auth()));
    return new SigningClient({
      nodes,
      tokenFile,
      nonceFile: join(work, `${name}.nonce`),
      maxTimeMs: 60_000,
      requestTimeoutMs: 10_000,
      ...opts,
    });
  }

  /** Each node, the restarted one too, signs a fresh PE on its own, and it verifies. */
  async function everyNodeSigns(tag: string): Promise<void> {
    for (const [i, url] of rig.urls.entries()) {
      const file = join(work, `${tag}-${i}.exe`);
      writeFileSync(file, taggedInput("exe", `${tag}-${i}-${randomBytes(4).toString("hex")}`).bytes);
      const r = await (await client(`${tag}-${i}`, [url])).sign(file, "authenticode", `${file}.signed.exe`);
      assert.equal(r.source, "signed", url);
      assert.deepEqual(unverified([r.output], caFile()), []);
    }
  }

  test("8. kill -9 a node holding signed files: clients asking for them get a 404, upload again and get valid files", async (t) => {
    const inputs = new EmbeddedInputs();
    let reuploads = 0;
    const onEvent = (e: ClientEvent) => {
      if (e.phase === "retrying" && /lost after the upload/.test(e.detail ?? "")) reuploads++;
    };
    let victim = -1;
    let held: string[] = [];
    let asked = 0;
    let reuploadsBefore = 0;
    const r = await rig.scenario(
      "8. kill -9 the owner of signed files",
      async () => {
        await until("a node holding 8 signed files", async () => {
          for (const [owner, files] of await filesByOwner(rig))
            if (files.length > held.length) [victim, held] = [rig.urls.indexOf(owner), files];
          return held.length >= 8;
        });
        assert.ok(victim >= 0, "the result records name the nodes by their URLs");
        await rig.nodes[victim]?.stop("SIGKILL");
        reuploadsBefore = reuploads;
        // From now on the clients' repeats are the files the dead node held.
        asked = inputs.repeatOnly(held);
        await until(
          "clients uploading again what the dead node held",
          async () => reuploads - reuploadsBefore >= 5,
          30_000,
        );
        await rig.restartNode(victim);
      },
      3000,
      {
        format: "authenticode",
        input: (c, n) => inputs.next(c, n),
        client: (i) => ({ random: startAtNode(i, rig.urls.length), onEvent }),
      },
    );
    t.diagnostic(
      `${formatReport(r)}; node ${victim} held ${held.length} signed files when killed (${asked} of them asked for again), ${reuploads - reuploadsBefore} uploads again after a 404 (${reuploadsBefore} before the kill)`,
    );
    assertNoFailures(r);
    assert.ok(reuploads - reuploadsBefore >= 5, "files whose owner died were uploaded again");
    // The nodes' side of it: files streamed from the peer that held them, and 404s for the dead
    // one's (or, once it was back with an empty spool, missing from it).
    const fetches = await fileResultFetches(rig);
    t.diagnostic(`GETs of signed files on the nodes: ${JSON.stringify(fetches)}`);
    assert.ok((fetches.peer ?? 0) > 0, "nodes streamed files that another node held");
    assert.ok(
      (fetches.unreachable ?? 0) + (fetches.missing ?? 0) >= 5,
      "nodes answered 404 for the dead node's files",
    );
    assert.equal(r.outputs.length, r.signed);
    assert.deepEqual(unverified(r.outputs, caFile()), []);
    await everyNodeSigns("after-8");
  });

  test("9. the owner killed while a non-owner streams its file: the download is cut short, nothing partial is written, the client signs again", async (t) => {
    const [owner, through, other] = rig.urls as [string, string, string];
    const input = join(work, "large.exe");
    // 15 MiB: more than the sockets between the nodes hold, within what signtool reads whole.
    const pe = minimalPe(15 * 1024 * 1024);
    randomBytes(pe.length - 0x400).copy(pe, 0x400);
    writeFileSync(input, pe);
    const signed = await (await client("owner", [owner])).sign(
      input,
      "authenticode",
      join(work, "by-owner.exe"),
    );
    assert.equal(signed.source, "signed");
    // In front of `through`: the owner is killed once the download's answer has begun, before
    // more than the sockets between them hold has left it.
    const front = await startScriptedNode(() => "proxy", through, {
      onUpstreamAnswer: async (req, up) => {
        if (req.method === "GET" && req.url?.startsWith("/sign/authenticode/") && up.statusCode === 200)
          await rig.nodes[0]?.stop("SIGKILL");
      },
    });
    const outDir = join(work, "mid-stream");
    mkdirSync(outDir);
    const output = join(outDir, "large.exe");
    const events: string[] = [];
    let writtenAtCut: string[] | undefined;
    try {
      const reader = await client("reader", [front.url, other], {
        random: startAtNode(0, 2),
        onEvent: (e) => {
          if (e.phase !== "retrying") return;
          events.push(`${e.node}: ${e.detail}`);
          writtenAtCut ??= readdirSync(outDir);
        },
      });
      const r = await reader.sign(input, "authenticode", output);
      const cut = front.hits.find(
        (h) => h.path.startsWith("/sign/authenticode/") && h.method === "GET",
      )?.relayed;
      t.diagnostic(`download cut at ${cut?.bytes} of ${cut?.contentLength} bytes; then ${events.join("; ")}`);
      assert.ok(cut && !cut.complete && cut.bytes < (cut.contentLength ?? 0), "the download was cut short");
      assert.deepEqual(writtenAtCut, [], "nothing was written when the download broke");
      assert.match(events[0] ?? "", /broke off the signed file|closed the connection mid-answer/);
      assert.ok(
        events.some((e) => e.startsWith(other) && /lost after the upload/.test(e)),
        "the next node answered 404 and the client uploaded again",
      );
      assert.equal(r.source, "signed");
      assert.deepEqual(readdirSync(outDir), ["large.exe"]);
      assert.deepEqual(unverified([output], caFile()), []);
      const redis = rig.redis();
      try {
        assert.equal(await redis.hget(`signing:result:authenticode:${sha256(pe)}`, "owner"), other);
      } finally {
        redis.disconnect();
      }
    } finally {
      await front.close();
    }
    await rig.restartNode(0);
    await everyNodeSigns("after-9");
  });
});

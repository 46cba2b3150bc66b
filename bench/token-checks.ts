/**
 * Token checks: the cost of one check — local MAC/expiry/IP, then the Redis script — in µs,
 * its p99, the Redis commands (round trips) per check, and checks/s per core of node CPU.
 * Uses the node's own TokenService against a real redis-server on loopback, no HTTP.
 *
 *   node dist/bench/token-checks.js        BENCH_CHECKS=20000 BENCH_SECONDS=3
 */
import { Redis } from "ioredis";
import { TestCluster } from "../scripts/in-process-cluster.js";
import { createLogger } from "../src/log/logger.js";
import { NodeMetrics } from "../src/metrics/node-metrics.js";
import { BREAKER_NAMES, StoreBreakers } from "../src/store/breakers.js";
import { StoreKeys } from "../src/store/keys.js";
import { createRedisClient, waitForReady } from "../src/store/redis.js";
import { ReplicatedWrites } from "../src/store/replicas.js";
import { verifyTokenLocally } from "../src/tokens/codec.js";
import { TOKEN_CHECK_RESULTS, type TokenCheck, TokenService } from "../src/tokens/service.js";
import { cpuMs, fmt, main, printTable, ratio, type Summary, summarize, writeResult } from "./lib.js";

const CHECKS = Number(process.env.BENCH_CHECKS ?? 20_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = 64;

/** One phase of full checks, one at a time: latencies and what each check asked of Redis. */
interface CheckPhase {
  latency: Summary;
  /** Commands the node's client sent per check. */
  roundTrips: number;
  /** Redis's own count per check, which includes the commands a Lua script runs. */
  redisCommands: number;
}

/** Phase 4: checks done in SECONDS with CONCURRENCY in flight, and the CPU they took. */
interface Throughput {
  done: number;
  checksPerSec: number;
  nodeCpuS: number;
  redisCpuS: number;
}

/** What every phase measures with: the service, the tokens it issued, and ways to count commands. */
interface Bench {
  service: TokenService;
  tok: (i: number) => string;
  secrets: ReadonlyMap<string, Buffer>;
  client: Redis;
  /** Redis's total_commands_processed, read on a connection of its own. */
  commands: () => Promise<number>;
}

/** The bench with the client's commands counted: only from the full checks on, so the PING floor times no wrapper. */
interface CountingBench extends Bench {
  /** Commands the node's client has sent so far. */
  sent: () => number;
}

/** The node's TokenService, built as the node builds it, on the bench's own Redis client. */
function tokenService(cluster: TestCluster, client: Redis): TokenService {
  const { config, tokenSecrets } = cluster.loaded;
  const log = createLogger("silent", "bench");
  const metrics = new NodeMetrics();
  metrics.initialise(["gpg"], TOKEN_CHECK_RESULTS, BREAKER_NAMES);
  const breakers = new StoreBreakers(
    { commandTimeoutMs: config.store.commandTimeoutMs, ...config.store.breaker },
    metrics,
    log,
  );
  return new TokenService({
    client,
    keys: new StoreKeys(config.store.prefix),
    secrets: tokenSecrets,
    nodeId: "bench",
    downPolicy: config.store.downPolicy,
    orphanPolicy: config.store.orphanPolicy,
    recoveryGraceMs: config.store.recoveryGraceMs,
    replicated: new ReplicatedWrites(async () => client, config.store.replicaAckTimeoutMs),
    breakers,
    metrics,
    log,
  });
}

/**
 * Counts the commands the client sends from now on. Round trips = these (nothing on this path is
 * pipelined); Redis's own counter also counts the commands a Lua script runs inside one EVALSHA.
 */
function countSentCommands(client: Redis): () => number {
  let sent = 0;
  const send = client.sendCommand.bind(client) as (...a: unknown[]) => unknown;
  (client as unknown as { sendCommand: typeof send }).sendCommand = (...a: unknown[]) => {
    sent++;
    return send(...a);
  };
  return () => sent;
}

/** 1. Local checks only (MAC, expiry, IP): what a forged token costs, µs each. */
function timeLocalChecks(b: Bench): { localN: number; localUs: number } {
  const nowS = Math.floor(Date.now() / 1000);
  const localN = CHECKS * 5;
  const t0 = performance.now();
  for (let i = 0; i < localN; i++) verifyTokenLocally(b.tok(i), b.secrets, "127.0.0.1", nowS);
  return { localN, localUs: ((performance.now() - t0) * 1000) / localN };
}

/** 1b. The floor: one PING round trip on the same connection, µs each. */
async function timePings(client: Redis): Promise<Summary> {
  const pingLat: number[] = [];
  for (let i = 0; i < CHECKS; i++) {
    const s = performance.now();
    await client.ping();
    pingLat.push((performance.now() - s) * 1000);
  }
  return summarize(pingLat);
}

/**
 * Runs `check` CHECKS times, one at a time, timing each (µs) and counting Redis commands;
 * `accept` sees each answer outside the timed part.
 */
async function timeCheckPhase(
  b: CountingBench,
  check: (i: number) => Promise<TokenCheck>,
  accept: (i: number, r: TokenCheck) => void,
): Promise<CheckPhase> {
  const lat: number[] = [];
  const c0 = await b.commands();
  const s0 = b.sent();
  for (let i = 0; i < CHECKS; i++) {
    const s = performance.now();
    const r = await check(i);
    lat.push((performance.now() - s) * 1000);
    accept(i, r);
  }
  // - 1: the INFO that read c0 is counted too
  const redisCommands = ((await b.commands()) - c0 - 1) / CHECKS;
  return { latency: summarize(lat), roundTrips: (b.sent() - s0) / CHECKS, redisCommands };
}

/** 2. Full checks (token + revocation), as GET /sign makes them. */
function timeReadChecks(b: CountingBench): Promise<CheckPhase> {
  return timeCheckPhase(
    b,
    (i) => b.service.check(b.tok(i), "127.0.0.1"),
    (_, r) => {
      if (!r.ok) throw new Error(`check failed: ${r.result}`);
    },
  );
}

/** 3. Upload checks (nonce chain advances, compare-and-set in the same script), as POST /sign. */
function timeUploadChecks(b: CountingBench): Promise<CheckPhase> {
  const nonces = new Map<string, string>();
  return timeCheckPhase(
    b,
    (i) => {
      const t = b.tok(i);
      return b.service.check(t, "127.0.0.1", { value: nonces.get(t) ?? "", sha256: `${i}` }, "gpg");
    },
    (i, r) => {
      if (!r.ok || r.nextNonce === undefined) throw new Error(`upload check failed: ${r.result}`);
      nonces.set(b.tok(i), r.nextNonce);
    },
  );
}

/** 4. Throughput: CONCURRENCY checks in flight for SECONDS; CPU of this process and of Redis. */
async function measureThroughput(b: Bench, redisPid: number | undefined): Promise<Throughput> {
  const r0 = redisPid ? cpuMs(redisPid) : Number.NaN;
  const u0 = process.cpuUsage();
  let done = 0;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      for (let i = w; performance.now() < end; i += CONCURRENCY) {
        await b.service.check(b.tok(i), "127.0.0.1");
        done++;
      }
    }),
  );
  const elapsedS = (performance.now() - t0) / 1000;
  const u = process.cpuUsage(u0);
  const nodeCpuS = (u.user + u.system) / 1e6;
  const redisCpuS = redisPid ? (cpuMs(redisPid) - r0) / 1000 : Number.NaN;
  return { done, checksPerSec: done / elapsedS, nodeCpuS, redisCpuS };
}

/** The first table: each kind of check one at a time, beside the PING floor. */
function printLatencies(
  local: { localN: number; localUs: number },
  ping: Summary,
  read: CheckPhase,
  upload: CheckPhase,
) {
  const row = (name: string, p: CheckPhase) => {
    const s = p.latency;
    return [name, s.n, s.mean, s.p50, s.p99, s.max, p.roundTrips, p.redisCommands];
  };
  printTable(
    "Token checks: one at a time (TokenService.check against redis-server on loopback)",
    [
      "check",
      "n",
      "mean µs",
      "p50 µs",
      "p99 µs",
      "max µs",
      "round trips/check",
      "Redis cmds incl. in-script",
    ],
    [
      [
        "local only (MAC, expiry, IP; forged tokens stop here)",
        local.localN,
        local.localUs,
        undefined,
        undefined,
        undefined,
        0,
        0,
      ],
      ["floor: Redis PING on the same connection", ping.n, ping.mean, ping.p50, ping.p99, ping.max, 1, 1],
      row("read: token + revocation (GET /sign)", read),
      row("upload: + nonce compare-and-set (POST /sign)", upload),
    ],
  );
}

function printThroughput(t: Throughput): void {
  printTable(
    `Token checks: throughput, ${CONCURRENCY} in flight for ${SECONDS} s`,
    [
      "checks/s",
      "node CPU s",
      "checks/s per node core",
      "node µs CPU/check",
      "Redis CPU s",
      "Redis µs CPU/check",
    ],
    [
      [
        t.checksPerSec,
        t.nodeCpuS,
        t.done / t.nodeCpuS,
        (t.nodeCpuS * 1e6) / t.done,
        t.redisCpuS,
        (t.redisCpuS * 1e6) / t.done,
      ],
    ],
  );
}

/** The targets table: at most one round trip per check, p99 within 1 ms on loopback. */
function printTargets(read: CheckPhase, upload: CheckPhase): { roundTrips: boolean; p99: boolean } {
  const met = {
    roundTrips: Math.max(read.roundTrips, upload.roundTrips) <= 1.0001,
    p99: Math.max(read.latency.p99, upload.latency.p99) <= 1000,
  };
  printTable(
    "Token checks: targets",
    ["target", "wanted", "measured", "met"],
    [
      [
        "Redis round trips per check",
        "≤ 1",
        `${fmt(read.roundTrips, 3)} read, ${fmt(upload.roundTrips, 3)} upload`,
        met.roundTrips ? "yes" : "NO",
      ],
      [
        "p99 on loopback",
        "≤ 1000 µs",
        `${fmt(read.latency.p99)} µs read, ${fmt(upload.latency.p99)} µs upload`,
        met.p99 ? "yes" : "NO",
      ],
    ],
  );
  return met;
}

/** Tokens issued through the service, and the bench around it; warmed before anything is timed. */
async function prepare(cluster: TestCluster, client: Redis, probe: Redis): Promise<Bench> {
  await waitForReady(client, 5000);
  const service = tokenService(cluster, client);
  const tokens = await Promise.all(
    Array.from({ length: 1000 }, () =>
      service.issue({ issuer: "bench", clientIp: "127.0.0.1", durationSeconds: 3600 }).then((t) => t.token),
    ),
  );
  const secrets = new Map(cluster.loaded.tokenSecrets.map((s) => [s.kid, s.secret]));
  const tok = (i: number) => tokens[i % tokens.length] as string;

  // Warm-up: JIT, script cache (EVALSHA after the first EVAL), connections.
  for (let i = 0; i < 2000; i++) await service.check(tok(i), "127.0.0.1");
  const commands = async () => {
    const m = /total_commands_processed:(\d+)/.exec(await probe.info("stats"));
    return Number(m?.[1] ?? Number.NaN);
  };
  return { service, tok, secrets, client, commands };
}

/** The phases in order, then the tables and bench/results/token-checks.json. */
async function measure(b: Bench, probe: Redis, redisPid: number | undefined): Promise<void> {
  const local = timeLocalChecks(b);
  const ping = await timePings(b.client);
  const counting = { ...b, sent: countSentCommands(b.client) };
  const read = await timeReadChecks(counting);
  const upload = await timeUploadChecks(counting);
  const cmdStats = (await probe.info("commandstats"))
    .split("\n")
    .filter((l) => /^cmdstat_(evalsha|eval|exists|get|hmget|hgetall|set):/.test(l))
    .map((l) => l.trim());
  const throughput = await measureThroughput(b, redisPid);

  printLatencies(local, ping, read, upload);
  printThroughput(throughput);
  console.log(`redis commandstats: ${cmdStats.join(" | ")}`);
  const met = printTargets(read, upload);
  const { done, nodeCpuS, redisCpuS } = throughput;
  const phase = (p: CheckPhase) => ({
    ...p.latency,
    unit: "µs",
    roundTripsPerCheck: p.roundTrips,
    redisCommandsPerCheck: p.redisCommands,
  });
  writeResult("token-checks", {
    settings: { checks: CHECKS, seconds: SECONDS, concurrency: CONCURRENCY },
    localUs: local.localUs,
    ping: { ...ping, unit: "µs" },
    read: phase(read),
    upload: phase(upload),
    throughput: {
      checksPerSec: throughput.checksPerSec,
      checksPerNodeCoreSec: ratio(done, nodeCpuS),
      nodeCpuUsPerCheck: (nodeCpuS * 1e6) / done,
      redisCpuUsPerCheck: (redisCpuS * 1e6) / done,
    },
    commandstats: cmdStats,
    met,
  });
}

main(async () => {
  const cluster = await TestCluster.start({ nodes: 0 });
  const { config } = cluster.loaded;
  const client = createRedisClient({
    redis: config.redis,
    commandTimeoutMs: config.store.commandTimeoutMs,
    password: cluster.loaded.redisPassword,
  });
  const probe = new Redis(cluster.redis.url);
  try {
    const bench = await prepare(cluster, client, probe);
    await measure(bench, probe, cluster.redis.proc?.pid);
  } finally {
    probe.disconnect();
    client.disconnect();
    await cluster.stop();
  }
});

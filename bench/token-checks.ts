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
import { TOKEN_CHECK_RESULTS, TokenService } from "../src/tokens/service.js";
import { cpuMs, fmt, main, printTable, ratio, summarize, writeResult } from "./lib.js";

const CHECKS = Number(process.env.BENCH_CHECKS ?? 20_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = 64;

main(async () => {
  const cluster = await TestCluster.start({ nodes: 0 });
  const { config, tokenSecrets } = cluster.loaded;
  const log = createLogger("silent", "bench");
  const client = createRedisClient({
    redis: config.redis,
    commandTimeoutMs: config.store.commandTimeoutMs,
    password: cluster.loaded.redisPassword,
  });
  const probe = new Redis(cluster.redis.url);
  try {
    await waitForReady(client, 5000);
    const metrics = new NodeMetrics();
    metrics.initialise(["gpg"], TOKEN_CHECK_RESULTS, BREAKER_NAMES);
    const breakers = new StoreBreakers(
      { commandTimeoutMs: config.store.commandTimeoutMs, ...config.store.breaker },
      metrics,
      log,
    );
    const service = new TokenService({
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
    const tokens = await Promise.all(
      Array.from({ length: 1000 }, () =>
        service.issue({ issuer: "bench", clientIp: "127.0.0.1", durationSeconds: 3600 }).then((t) => t.token),
      ),
    );
    const secrets = new Map(tokenSecrets.map((s) => [s.kid, s.secret]));
    const tok = (i: number) => tokens[i % tokens.length] as string;

    // Warm-up: JIT, script cache (EVALSHA after the first EVAL), connections.
    for (let i = 0; i < 2000; i++) await service.check(tok(i), "127.0.0.1");

    // 1. Local checks only (MAC, expiry, IP): what a forged token costs.
    const nowS = Math.floor(Date.now() / 1000);
    const localN = CHECKS * 5;
    let t0 = performance.now();
    for (let i = 0; i < localN; i++) verifyTokenLocally(tok(i), secrets, "127.0.0.1", nowS);
    const localUs = ((performance.now() - t0) * 1000) / localN;

    // 1b. The floor: one PING round trip on the same connection.
    const pingLat: number[] = [];
    for (let i = 0; i < CHECKS; i++) {
      const s = performance.now();
      await client.ping();
      pingLat.push((performance.now() - s) * 1000);
    }
    const ping = summarize(pingLat);

    // 2. Full checks, one at a time (latency), counting Redis commands.
    const commands = async () => {
      const m = /total_commands_processed:(\d+)/.exec(await probe.info("stats"));
      return Number(m?.[1] ?? Number.NaN);
    };
    const stats = async () => probe.info("commandstats");
    // Round trips = commands the node's client sends (nothing on this path is pipelined);
    // Redis's own counter also counts the commands a Lua script runs inside one EVALSHA.
    let sent = 0;
    const send = client.sendCommand.bind(client) as (...a: unknown[]) => unknown;
    (client as unknown as { sendCommand: typeof send }).sendCommand = (...a: unknown[]) => {
      sent++;
      return send(...a);
    };
    const readLat: number[] = [];
    let c0 = await commands();
    let s0 = sent;
    for (let i = 0; i < CHECKS; i++) {
      const s = performance.now();
      const r = await service.check(tok(i), "127.0.0.1");
      readLat.push((performance.now() - s) * 1000);
      if (!r.ok) throw new Error(`check failed: ${r.result}`);
    }
    const readCmds = ((await commands()) - c0 - 1) / CHECKS;
    const readTrips = (sent - s0) / CHECKS;

    // 3. Upload checks (nonce chain advances, compare-and-set in the same script).
    const signLat: number[] = [];
    const nonces = new Map<string, string>();
    c0 = await commands();
    s0 = sent;
    for (let i = 0; i < CHECKS; i++) {
      const t = tok(i);
      const s = performance.now();
      const r = await service.check(t, "127.0.0.1", { value: nonces.get(t) ?? "", sha256: `${i}` }, "gpg");
      signLat.push((performance.now() - s) * 1000);
      if (!r.ok || r.nextNonce === undefined) throw new Error(`upload check failed: ${r.result}`);
      nonces.set(t, r.nextNonce);
    }
    const signCmds = ((await commands()) - c0 - 1) / CHECKS;
    const signTrips = (sent - s0) / CHECKS;
    const cmdStats = (await stats())
      .split("\n")
      .filter((l) => /^cmdstat_(evalsha|eval|exists|get|hmget|hgetall|set):/.test(l))
      .map((l) => l.trim());

    // 4. Throughput: CONCURRENCY checks in flight for SECONDS; CPU of this process and of Redis.
    const redisPid = cluster.redis.proc?.pid;
    const r0 = redisPid ? cpuMs(redisPid) : Number.NaN;
    const u0 = process.cpuUsage();
    let done = 0;
    t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async (_, w) => {
        for (let i = w; performance.now() < end; i += CONCURRENCY) {
          await service.check(tok(i), "127.0.0.1");
          done++;
        }
      }),
    );
    const elapsedS = (performance.now() - t0) / 1000;
    const u = process.cpuUsage(u0);
    const nodeCpuS = (u.user + u.system) / 1e6;
    const redisCpuS = redisPid ? (cpuMs(redisPid) - r0) / 1000 : Number.NaN;
    const checksPerSec = done / elapsedS;

    const read = summarize(readLat);
    const sign = summarize(signLat);
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
          localN,
          localUs,
          undefined,
          undefined,
          undefined,
          0,
          0,
        ],
        ["floor: Redis PING on the same connection", ping.n, ping.mean, ping.p50, ping.p99, ping.max, 1, 1],
        [
          "read: token + revocation (GET /sign)",
          read.n,
          read.mean,
          read.p50,
          read.p99,
          read.max,
          readTrips,
          readCmds,
        ],
        [
          "upload: + nonce compare-and-set (POST /sign)",
          sign.n,
          sign.mean,
          sign.p50,
          sign.p99,
          sign.max,
          signTrips,
          signCmds,
        ],
      ],
    );
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
          checksPerSec,
          nodeCpuS,
          done / nodeCpuS,
          (nodeCpuS * 1e6) / done,
          redisCpuS,
          (redisCpuS * 1e6) / done,
        ],
      ],
    );
    console.log(`redis commandstats: ${cmdStats.join(" | ")}`);
    const met = {
      roundTrips: Math.max(readTrips, signTrips) <= 1.0001,
      p99: Math.max(read.p99, sign.p99) <= 1000,
    };
    printTable(
      "Token checks: targets",
      ["target", "wanted", "measured", "met"],
      [
        [
          "Redis round trips per check",
          "≤ 1",
          `${fmt(readTrips, 3)} read, ${fmt(signTrips, 3)} upload`,
          met.roundTrips ? "yes" : "NO",
        ],
        [
          "p99 on loopback",
          "≤ 1000 µs",
          `${fmt(read.p99)} µs read, ${fmt(sign.p99)} µs upload`,
          met.p99 ? "yes" : "NO",
        ],
      ],
    );
    writeResult("token-checks", {
      settings: { checks: CHECKS, seconds: SECONDS, concurrency: CONCURRENCY },
      localUs,
      ping: { ...ping, unit: "µs" },
      read: { ...read, unit: "µs", roundTripsPerCheck: readTrips, redisCommandsPerCheck: readCmds },
      upload: { ...sign, unit: "µs", roundTripsPerCheck: signTrips, redisCommandsPerCheck: signCmds },
      throughput: {
        checksPerSec,
        checksPerNodeCoreSec: ratio(done, nodeCpuS),
        nodeCpuUsPerCheck: (nodeCpuS * 1e6) / done,
        redisCpuUsPerCheck: (redisCpuS * 1e6) / done,
      },
      commandstats: cmdStats,
      met,
    });
  } finally {
    probe.disconnect();
    client.disconnect();
    await cluster.stop();
  }
});

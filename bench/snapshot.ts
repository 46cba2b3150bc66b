/**
 * Monitor snapshots: what one snapshot (SCAN for token, revocation and nonce keys, then
 * pipelined reads) costs Redis when the keyspace is mostly results and jobs, as a busy
 * cluster's is (one of each per signed file, kept for `signing.resultTtl`). Redis runs one
 * command at a time: the time it spends scanning is time every node's token check waits.
 *
 *   node dist/bench/snapshot.js        BENCH_TOKENS=1000 BENCH_KEYS_K=20,100,400
 */
import { Redis } from "ioredis";
import { RedisServer } from "../scripts/redis-server.js";
import { takeSnapshot } from "../src/recovery/snapshot.js";
import { StoreKeys } from "../src/store/keys.js";
import { fmt, main, percentile, printTable, writeResult } from "./lib.js";

const TOKENS = Number(process.env.BENCH_TOKENS ?? 1000);
const KEYS_K = (process.env.BENCH_KEYS_K ?? "20,100,400").split(",").map(Number);
const ROUNDS = 5;

interface Row {
  otherKeys: number;
  tokens: number;
  scanCalls: number;
  redisMsPerSnapshot: number;
  redisUsPerThousandKeys: number;
  wallMs: number;
  /** Share of one Redis core at the monitor's default snapshot schedule (every 5 s). */
  redisShareEvery5s: number;
}

/** SCAN calls and µs Redis spent in all commands since RESETSTAT. */
async function commandstats(redis: Redis): Promise<{ calls: number; usec: number }> {
  const text = await redis.info("commandstats");
  let usec = 0;
  for (const m of text.matchAll(/cmdstat_\S+:calls=\d+,usec=(\d+)/g)) usec += Number(m[1]);
  const scan = /cmdstat_scan:calls=(\d+)/.exec(text);
  return { calls: Number(scan?.[1] ?? 0), usec };
}

/** The tokens the monitor looks for: each with its nonce, every tenth revoked. */
async function fillTokens(redis: Redis, keys: StoreKeys): Promise<void> {
  const exp = Date.now() + 3_600_000;
  const fill = redis.pipeline();
  for (let i = 0; i < TOKENS; i++) {
    fill.set(keys.token(`t${i}`), '{"iss":"bench"}', "PXAT", exp);
    fill.hset(keys.nonce(`t${i}`), { n: "1", d: "x", r: "0" });
    fill.pexpireat(keys.nonce(`t${i}`), exp);
    if (i % 10 === 0) fill.set(keys.revoked(`t${i}`), "revoked", "PXAT", exp);
  }
  await fill.exec();
}

/** Adds results and jobs, in pairs as signing leaves them, from `from` up to `target`; returns the new count. */
async function addResultsAndJobs(
  redis: Redis,
  keys: StoreKeys,
  from: number,
  target: number,
): Promise<number> {
  let others = from;
  while (others < target) {
    const pipe = redis.pipeline();
    for (let i = 0; i < 5000 && others < target; i += 2, others += 2) {
      pipe.set(keys.result("gpg", `f${others}`), "-----BEGIN PGP SIGNATURE-----", "PX", 3_600_000);
      pipe.hset(keys.job("gpg", `f${others}`), { state: "done", node: "n1" });
    }
    await pipe.exec();
  }
  return others;
}

/** ROUNDS snapshots of the keyspace as it stands, as the table's row for `others` other keys. */
async function measureSnapshots(redis: Redis, keys: StoreKeys, others: number): Promise<Row> {
  const redisMs: number[] = [];
  const wall: number[] = [];
  let scanCalls = 0;
  for (let r = 0; r < ROUNDS; r++) {
    await redis.config("RESETSTAT");
    const t0 = performance.now();
    const snap = await takeSnapshot(redis, keys, "bench");
    wall.push(performance.now() - t0);
    const s = await commandstats(redis);
    scanCalls = s.calls;
    redisMs.push(s.usec / 1000);
    if (snap.tokens.length !== TOKENS) throw new Error(`snapshot found ${snap.tokens.length} tokens`);
  }
  const ms = percentile(redisMs, 50);
  return {
    otherKeys: others,
    tokens: TOKENS,
    scanCalls,
    redisMsPerSnapshot: ms,
    redisUsPerThousandKeys: (ms * 1000) / ((others + TOKENS * 2.1) / 1000),
    wallMs: percentile(wall, 50),
    redisShareEvery5s: ms / 5000,
  };
}

function printRows(rows: Row[]): void {
  printTable(
    `Monitor snapshot: ${TOKENS} tokens among results and jobs (medians of ${ROUNDS})`,
    [
      "results + jobs",
      "SCAN calls",
      "Redis ms/snapshot",
      "Redis µs per 1000 keys",
      "snapshot wall ms",
      "Redis share at */5 s",
    ],
    rows.map((r) => [
      r.otherKeys,
      r.scanCalls,
      fmt(r.redisMsPerSnapshot, 1),
      fmt(r.redisUsPerThousandKeys, 0),
      fmt(r.wallMs, 1),
      `${fmt(r.redisShareEvery5s * 100, 1)} %`,
    ]),
  );
}

main(async () => {
  const server = await RedisServer.start();
  const redis = new Redis(server.url);
  const keys = new StoreKeys("signing:");
  const rows: Row[] = [];
  try {
    await fillTokens(redis, keys);
    let others = 0;
    for (const k of KEYS_K) {
      others = await addResultsAndJobs(redis, keys, others, k * 1000);
      rows.push(await measureSnapshots(redis, keys, others));
    }
  } finally {
    redis.disconnect();
    await server.stop();
  }
  printRows(rows);
  writeResult("snapshot", { settings: { tokens: TOKENS, keysK: KEYS_K, rounds: ROUNDS }, rows });
});

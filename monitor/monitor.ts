import { mkdirSync, renameSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import { type ScheduledTask, schedule } from "node-cron";
import type { Logger } from "pino";
import { createLogger } from "../src/log/logger.js";
import { lockEpoch, reseed, unlockEpoch } from "../src/recovery/restore.js";
import {
  readSnapshot,
  type Snapshot,
  SnapshotCorruptError,
  takeSnapshot,
  writeSnapshot,
} from "../src/recovery/snapshot.js";
import { ensureEpoch, ensureOrRepairEpoch, setEpochState } from "../src/store/epoch.js";
import { StoreKeys } from "../src/store/keys.js";
import { createRedisClient, waitForReady } from "../src/store/redis.js";
import { REJECTED_TOKEN_RESULTS } from "../src/tokens/service.js";
import { Alerter, type AlertName, type AlertText } from "./alerts.js";
import type { LoadedMonitorConfig, MonitorConfig } from "./config.js";
import { classify, type Observation, parseInfoServer } from "./detect.js";
import { MonitorMetrics } from "./metrics.js";
import { RecentEvents, TokenRates } from "./recent.js";
import { checkCounts, SpikeDetector, type SpikeReading } from "./spike.js";

export interface RunningMonitor {
  url: string;
  port: number;
  metrics: MonitorMetrics;
  log: Logger;
  /** Runs one detection pass now (tests, and the admin CLI's "check now"). */
  detectNow(): Promise<void>;
  snapshotNow(): Promise<Snapshot | undefined>;
  close(): Promise<void>;
}

const secondsAgo = (ms: number) => Math.round((Date.now() - ms) / 1000);

/**
 * The monitor: watches Redis every second, snapshots live tokens, re-seeds or invalidates them
 * after a data loss, watches the nodes for invalid-token spikes, and alerts.
 */
export async function startMonitor(
  loaded: LoadedMonitorConfig,
  opts: { log?: Logger } = {},
): Promise<RunningMonitor> {
  const { config } = loaded;
  const m = config.monitor;
  const id = m.id ?? `${hostname()}:${m.port}`;
  const log = opts.log ?? createLogger(config.log.level, id);
  const metrics = new MonitorMetrics();
  const keys = new StoreKeys(config.store.prefix);
  mkdirSync(m.stateDir, { recursive: true, mode: 0o700 });
  const { webhookUrl, alertmanagerUrl } = config.alerts;
  const alerter = new Alerter({
    ...(webhookUrl ? { webhookUrl } : {}),
    ...(alertmanagerUrl ? { alertmanagerUrl } : {}),
    stateFile: join(m.stateDir, "alerts.json"),
    runbookBaseUrl: config.alerts.runbookBaseUrl,
    timeoutMs: config.alerts.timeoutMs,
    retries: config.alerts.retries,
    monitorId: id,
    log,
    metrics,
  });
  const inherited = await alerter.restore();

  const snapshotFile = join(m.stateDir, "snapshot.json");
  let snapshot: Snapshot | undefined;
  try {
    snapshot = await readSnapshot(snapshotFile);
    if (snapshot)
      log.info({
        event: "snapshot_loaded",
        file: snapshotFile,
        tokens: snapshot.tokens.length,
        ageSeconds: secondsAgo(snapshot.takenAt),
      });
  } catch (err) {
    if (!(err instanceof SnapshotCorruptError)) throw err;
    // Keep the evidence, start without it: a monitor that refuses to start detects nothing.
    const aside = `${snapshotFile}.corrupt-${Date.now()}`;
    renameSync(snapshotFile, aside);
    log.error({ event: "snapshot_corrupt", file: snapshotFile, movedTo: aside, reason: err.message });
  }

  const redis = createRedisClient({
    redis: config.redis,
    commandTimeoutMs: 1000,
    password: loaded.redisPassword,
  });
  /** The connection's own error: commands refused meanwhile only say the stream is closed. */
  let connectionError: string | undefined;
  redis.on("error", (err: Error) => {
    connectionError = err.message; // reported by the detection loop as RedisUnreachable
  });
  redis.on("ready", () => {
    connectionError = undefined;
  });
  // Start with a first look at Redis if it is there, so that a restart right after start-up
  // is seen as one.
  await waitForReady(redis, config.redis.connectTimeoutMs).catch(() => {});

  const startedAt = Date.now();
  let prev: Observation | undefined;
  let knownEpochId = snapshot?.epochId;
  /** Since when Redis has not been reached, and the last reason. */
  let unreachable: { since: number; error: string } | undefined;
  /** The epoch whose data loss was counted, so a retried one is counted once. */
  let countedLoss: string | undefined;
  let lastDetect = 0;
  const eventTimers = new Map<AlertName, NodeJS.Timeout>();

  const resolveIn = (name: AlertName, ms: number) => {
    clearTimeout(eventTimers.get(name));
    eventTimers.set(
      name,
      setTimeout(() => alerter.resolve(name), ms),
    );
  };
  const recent = new RecentEvents();
  const tokenRates = new TokenRates();
  /** Restart alerts are events: (re)fire now, resolve after eventHoldSeconds. */
  const event = (name: AlertName, text: AlertText) => {
    recent.add(name, text.summary, text.description);
    if (alerter.isFiring(name)) alerter.resolve(name);
    alerter.fire(name, text);
    resolveIn(name, m.eventHoldSeconds * 1000);
  };

  /** Acts on a data loss; false when another monitor holds it (look again next tick). */
  const onDataLoss = async (cur: Observation, previousEpochId: string): Promise<boolean> => {
    const base = `Redis (run_id ${cur.runId.slice(0, 8)}, up ${cur.uptimeSeconds}s) came back without its data: epoch ${previousEpochId} was replaced by ${cur.epoch.id}.`;
    if (cur.epoch.state !== "fresh") {
      log.info({ event: "data_loss_already_settled", epoch: cur.epoch.id, state: cur.epoch.state });
      event("RedisRestartedWithDataLoss", {
        summary: "Redis restarted and lost its data (already handled)",
        description: `${base} The epoch is already ${cur.epoch.state} (another monitor or an operator acted).`,
      });
      return true;
    }
    if (!(await lockEpoch(redis, keys, cur.epoch.id, id))) {
      log.debug({ event: "data_loss_other_monitor", epoch: cur.epoch.id });
      return false;
    }
    try {
      await settle(cur, base);
    } catch (err) {
      // Let the next tick (ours or another monitor's) try again from the start.
      await unlockEpoch(redis, keys, cur.epoch.id).catch(() => {});
      throw err;
    }
    return true;
  };

  /** Marks the new epoch decided, if nobody else did first; says who did when not us. */
  const settleEpoch = async (
    cur: Observation,
    state: "restored" | "invalidated",
    minIatMs?: number,
  ): Promise<string | undefined> => {
    const change = { id: cur.epoch.id, state, onlyIfFresh: true } as const;
    if (await setEpochState(redis, keys, minIatMs ? { ...change, minIatMs } : change)) return undefined;
    const now = await ensureEpoch(redis, keys);
    log.warn({ event: "settle_lost", epoch: cur.epoch.id, wanted: state, found: `${now.id} ${now.state}` });
    return now.id === cur.epoch.id
      ? `Someone else (another monitor or an operator) settled it first: the epoch is ${now.state}.`
      : `Redis lost its data again meanwhile (epoch ${now.id}): the next check handles that.`;
  };

  const settle = async (cur: Observation, base: string): Promise<void> => {
    const started = Date.now();
    let description: string;
    if (m.onDataLoss === "reseed" && snapshot && snapshot.epochId !== cur.epoch.id) {
      const r = await reseed(redis, keys, snapshot);
      // An operator's earlier invalidation (minIat) stays in force in the new epoch.
      const lost = await settleEpoch(cur, "restored", snapshot.minIat || undefined);
      metrics.reseeded.inc(r.tokens);
      description = `${base} Re-seeded ${r.tokens} tokens, ${r.revoked} revocations and ${r.nonces} nonce chains from the snapshot taken ${secondsAgo(snapshot.takenAt)}s before (${r.skippedExpired} expired entries skipped) in ${Date.now() - started} ms; tokens issued after that snapshot heal on first use.${lost ? ` ${lost}` : " Builds should not notice."}`;
      log.warn({ event: "reseeded", epoch: cur.epoch.id, ...r, ms: Date.now() - started, settled: !lost });
    } else if (m.onDataLoss === "reseed") {
      description = `${base} No snapshot from before the loss: nothing to re-seed. Nodes answer 503 STORE_RECOVERING for lost tokens for store.recoveryGraceMs, then apply their store.orphanPolicy.`;
      log.error({
        event: "reseed_impossible",
        epoch: cur.epoch.id,
        reason: snapshot ? "snapshot is from the new epoch" : "no snapshot",
      });
    } else {
      const now = Date.now();
      // Tokens issued before the loss, not those the new epoch issued since: nodes refuse every
      // token issued before minIat. Whole seconds, as tokens carry their issue time.
      const lossAt = Math.floor(cur.epoch.createdAt / 1000) * 1000;
      const lost = await settleEpoch(cur, "invalidated", lossAt);
      const live = snapshot ? snapshot.tokens.filter((t) => t.expiresAt > now).length : 0;
      if (!lost) metrics.invalidated.inc(live);
      description = lost
        ? `${base} monitor.onDataLoss is invalidate, but this monitor did not settle it. ${lost}`
        : `${base} monitor.onDataLoss is invalidate: every token issued before ${new Date(lossAt).toISOString()} (${live} live per the last snapshot) now gets 401 TOKEN_INVALIDATED; build masters must fetch new tokens.`;
      log.warn({ event: "invalidated", epoch: cur.epoch.id, tokens: live, settled: !lost });
    }
    event("RedisRestartedWithDataLoss", { summary: "Redis restarted and lost its data", description });
  };

  /** Snapshot age, with or without Redis: the age since start-up when there is none yet. */
  const checkSnapshotAge = (now: number): void => {
    const age = snapshot ? (now - snapshot.takenAt) / 1000 : (now - startedAt) / 1000;
    metrics.snapshotAge.set(age);
    if (age > m.snapshotMaxAgeSeconds) {
      alerter.fire("SnapshotStale", {
        summary: "The monitor's token snapshot is stale",
        description: snapshot
          ? `The last snapshot (${snapshotFile}) is ${Math.round(age)}s old (limit ${m.snapshotMaxAgeSeconds}s): a data loss now would lose the tokens issued since.`
          : `No snapshot written in ${Math.round(age)}s since start-up (${snapshotFile}).`,
      });
    } else {
      alerter.resolve("SnapshotStale");
    }
  };

  const detect = async (): Promise<void> => {
    const now = Date.now();
    lastDetect = now;
    checkSnapshotAge(now);
    let cur: Observation;
    try {
      const [info, role] = await Promise.all([
        redis.info("server"),
        redis.call("ROLE") as Promise<unknown[]>,
      ]);
      const server = parseInfoServer(info);
      const roleName = Array.isArray(role) ? String(role[0]) : "unknown";
      if (roleName !== "master") throw new Error(`connected to a ${roleName}, not the master`);
      // A record that is not a valid epoch is replaced by a fresh one: handled as a data loss.
      cur = { at: now, ...server, role: roleName, epoch: await ensureOrRepairEpoch(redis, keys, now) };
    } catch (err) {
      metrics.redisUp.set(0);
      const error =
        redis.status === "ready" ? (err as Error).message : (connectionError ?? (err as Error).message);
      if (unreachable === undefined) {
        log.warn({ event: "redis_unreachable", err: error });
        recent.add("RedisUnreachable", `the monitor cannot reach the Redis master: ${error}`);
      }
      unreachable = { since: unreachable?.since ?? now, error };
      if (now - unreachable.since >= m.unreachableForSeconds * 1000) {
        alerter.fire("RedisUnreachable", {
          summary: "The signing cluster's Redis is unreachable",
          description: `The monitor has not reached the Redis master for ${secondsAgo(unreachable.since)}s: ${error}. Nodes follow store.downPolicy meanwhile.`,
        });
      }
      return;
    }
    metrics.redisUp.set(1);
    if (unreachable !== undefined) {
      log.info({ event: "redis_reachable", downSeconds: secondsAgo(unreachable.since) });
      recent.add("RedisReachable", `Redis reachable again after ${secondsAgo(unreachable.since)}s`);
      alerter.resolve("RedisUnreachable");
      unreachable = undefined;
    }
    const finding = classify(prev, cur, knownEpochId);
    if (finding.kind === "data_loss") {
      if (countedLoss !== cur.epoch.id) {
        countedLoss = cur.epoch.id;
        metrics.restarts.inc({ kind: "data_loss" });
        log.warn({
          event: "redis_data_loss",
          runId: cur.runId,
          previousEpoch: finding.previousEpochId,
          epoch: cur.epoch.id,
        });
      }
      // Not marked known until handled, so a failure, or another monitor still at it, is
      // looked at again on the next tick.
      if (!(await onDataLoss(cur, finding.previousEpochId))) {
        prev = cur;
        return;
      }
    } else if (finding.kind === "restart" || finding.kind === "failover") {
      metrics.restarts.inc({ kind: finding.kind });
      log.warn({
        event: `redis_${finding.kind}`,
        runId: cur.runId,
        previousRunId: prev?.runId,
        epoch: cur.epoch.id,
      });
      event("RedisRestarted", {
        summary:
          finding.kind === "failover"
            ? "Redis failed over to another server, data intact"
            : "Redis restarted, data intact",
        description: `Redis run_id changed ${prev?.runId.slice(0, 8)} → ${cur.runId.slice(0, 8)} (up ${cur.uptimeSeconds}s); the epoch ${cur.epoch.id} is unchanged, so no token was lost. Nothing to do unless it repeats.`,
      });
    }
    prev = cur;
    knownEpochId = cur.epoch.id;
  };

  // One detection at a time, whoever asks: the schedule, or a reconnect.
  let detecting: Promise<void> | undefined;
  const detectOnce = (): Promise<void> => {
    detecting ??= detect().finally(() => {
      detecting = undefined;
    });
    return detecting;
  };
  // A lost connection (Redis down: signing_monitor_redis_up 0) and a reconnect (Redis
  // restarted, or Sentinel switched the primary: the client follows +switch-master) are
  // looked at now, not at the next tick.
  const lookNow = () => {
    detectOnce().catch((err: Error) => log.warn({ event: "detect_failed", err: err.message }));
  };
  redis.on("ready", lookNow);
  redis.on("close", lookNow);

  const snapshotNow = async (): Promise<Snapshot | undefined> => {
    if (!prev || knownEpochId === undefined) return undefined;
    const epochId = knownEpochId;
    const epoch = await ensureEpoch(redis, keys);
    // Never replace the snapshot of lost tokens with a snapshot of the empty store.
    if (epoch.id !== epochId) return undefined;
    if (snapshot && snapshot.epochId !== epoch.id && epoch.state === "fresh") return undefined;
    const snap = await takeSnapshot(redis, keys, epoch.id, epoch.minIat);
    if ((await ensureEpoch(redis, keys)).id !== epoch.id) return undefined;
    await writeSnapshot(snapshotFile, snap);
    snapshot = snap;
    metrics.snapshotTokens.set(snap.tokens.length);
    metrics.snapshotAge.set(0);
    log.debug({
      event: "snapshot_written",
      tokens: snap.tokens.length,
      revoked: snap.revoked.length,
      nonces: snap.nonces.length,
    });
    return snap;
  };

  const spike = new SpikeDetector({
    ratio: config.spike.ratio,
    minChecksPerSecond: config.spike.minChecksPerSecond,
    forMs: config.spike.forSeconds * 1000,
  });
  let scrapes = 0;
  const scrape = async (): Promise<void> => {
    const readings = new Map<string, Map<string, number>>();
    await Promise.all(
      config.nodes.map(async (node) => {
        try {
          const res = await fetch(`${node.replace(/\/$/, "")}/metrics`, {
            signal: AbortSignal.timeout(2000),
          });
          if (res.ok) readings.set(node, checkCounts(await res.text()));
        } catch {
          // A node that does not answer is the business of SigningNodeDown, not of this alert.
        }
      }),
    );
    const r = spike.update(Date.now(), readings);
    for (const result of REJECTED_TOKEN_RESULTS)
      metrics.invalidTokenRate.set({ result }, r.byResult.get(result) ?? 0);
    metrics.tokenCheckRate.set(r.checksPerSecond);
    metrics.invalidTokenRatio.set(r.ratio);
    tokenRates.add(Date.now(), r.checksPerSecond, r.rejectedPerSecond);
    if (r.change === "fire") alerter.fire("InvalidTokenSpike", spikeText(r, config.spike));
    else if (r.change === "resolve") alerter.resolve("InvalidTokenSpike");
    // The second scrape is the first with rates: a spike the previous run left firing still
    // holds, or it is over.
    if (++scrapes === 2 && alerter.reconcile("InvalidTokenSpike", r.above)) {
      if (r.above) spike.resumeFiring(Date.now());
    }
  };

  /**
   * What the previous run left firing and the first detection did not fire or resolve itself
   * (SnapshotStale it always does): fired again while it holds, resolved if not.
   */
  const reconcileAtStart = () => {
    for (const { name, startsAt } of inherited) {
      if (name === "RedisUnreachable") alerter.reconcile(name, unreachable !== undefined);
      else if (name === "RedisRestarted" || name === "RedisRestartedWithDataLoss") {
        const left = Date.parse(startsAt) + m.eventHoldSeconds * 1000 - Date.now();
        if (alerter.reconcile(name, left > 0) && left > 0) resolveIn(name, left);
      } else if (name === "InvalidTokenSpike" && !config.nodes.length) alerter.reconcile(name, false);
    }
  };

  const task = (name: string, cron: string, fn: () => Promise<unknown>): ScheduledTask => {
    const t = schedule(
      cron,
      async () => {
        try {
          await fn();
        } catch (err) {
          log.warn({ event: `${name}_failed`, err: (err as Error).message });
        }
      },
      { name, noOverlap: true, suppressMissedWarning: true },
    );
    for (const e of ["execution:overlap", "execution:missed", "execution:failed"] as const) {
      t.on(e, () => log.debug({ event: "cron", task: name, what: e }));
    }
    return t;
  };
  const tasks = [task("detect", m.detectCron, detectOnce), task("snapshot", m.snapshotCron, snapshotNow)];
  if (config.nodes.length) tasks.push(task("spike", config.spike.scrapeCron, scrape));

  /** A failing check says what fails and since when; the last good state only when ok. */
  const redisCheck = () => {
    if (unreachable) {
      const since = new Date(unreachable.since).toISOString();
      const seconds = secondsAgo(unreachable.since);
      const detail = `unreachable since ${since} (${seconds}s): ${unreachable.error}`;
      return { ok: false, detail, error: unreachable.error, since, sinceSeconds: seconds };
    }
    if (!prev) return { ok: false, detail: "not reached yet" };
    return {
      ok: true,
      detail: `run_id ${prev.runId.slice(0, 8)}, epoch ${prev.epoch.id} ${prev.epoch.state}`,
    };
  };

  /** For `signing-admin status`: what happened lately, what fires, the share of rejected tokens. */
  const status = () => ({
    monitor: id,
    redis: redisCheck(),
    events: recent.list(),
    firing: alerter.firing(),
    tokens: {
      lastMinute: tokenRates.over(60) ?? null,
      last5Minutes: tokenRates.over(300) ?? null,
      spike: { ratio: config.spike.ratio, minChecksPerSecond: config.spike.minChecksPerSecond },
    },
  });

  const server = createServer(async (req, res) => {
    if (req.url === "/status") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify(status()));
    } else if (req.url === "/metrics") {
      res.setHeader("Content-Type", metrics.registry.contentType);
      res.end(await metrics.registry.metrics());
    } else if (req.url === "/readyz" || req.url === "/livez") {
      const looping = Date.now() - lastDetect < 5000;
      const body = {
        status: looping ? "ok" : "unavailable",
        checks: {
          loop: { ok: looping, detail: `last detection ${Date.now() - lastDetect} ms ago` },
          redis: redisCheck(),
          snapshot: {
            ok: snapshot !== undefined,
            detail: snapshot
              ? `${snapshot.tokens.length} tokens, ${secondsAgo(snapshot.takenAt)}s old`
              : "none yet",
          },
        },
      };
      res.writeHead(looping || req.url === "/livez" ? 200 : 503, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body));
    } else {
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end(
        JSON.stringify({ error: { code: "NOT_FOUND", message: "no such endpoint", retryable: false } }),
      );
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(m.port, m.host, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${m.host}:${port}`;
  const alertsTo = [webhookUrl && "webhook", alertmanagerUrl && "alertmanager"].filter(Boolean);
  log.info({
    event: "monitor_started",
    url,
    onDataLoss: m.onDataLoss,
    nodes: config.nodes.length,
    alertsTo: alertsTo.length ? alertsTo : "log only (alerts.enabled false)",
  });
  await detectOnce().catch(() => {});
  reconcileAtStart();

  return {
    url,
    port,
    metrics,
    log,
    detectNow: detectOnce,
    snapshotNow,
    async close() {
      for (const t of tasks) await t.destroy();
      for (const t of eventTimers.values()) clearTimeout(t);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      alerter.close();
      await Promise.race([alerter.flush(), new Promise((r) => setTimeout(r, 2000))]);
      redis.off("close", lookNow); // our own disconnect is no outage
      redis.disconnect();
    },
  };
}

const percent = (share: number) => `${(share * 100).toFixed(0)}%`;

/** The webhook text of InvalidTokenSpike: the share, the volume, the condition, by result. */
function spikeText(r: SpikeReading, c: MonitorConfig["spike"]): AlertText {
  const detail = [...r.byResult]
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k} ${v.toFixed(1)}/s`)
    .join(", ");
  return {
    summary: `Signing nodes reject more than ${percent(c.ratio)} of token checks`,
    description: `${percent(r.ratio)} of ${r.checksPerSecond.toFixed(1)} token checks/s are rejected (threshold ${percent(c.ratio)} above ${c.minChecksPerSecond} checks/s for ${c.forSeconds}s): ${detail}.`,
  };
}

/**
 * Wiring the monitor: builds its parts (alerts, snapshot, settling, detection, spike watch,
 * HTTP), schedules them, and takes them down in order. Each part's job is in its own module.
 */
import { accessSync, constants, mkdirSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { ScheduledTask } from "node-cron";
import type { Logger } from "pino";
import { SigningClusterError } from "../src/errors.js";
import { createLogger } from "../src/log/logger.js";
import type { Snapshot } from "../src/recovery/snapshot.js";
import { StoreKeys } from "../src/store/keys.js";
import { createRedisClient, type RedisClient, waitForReady } from "../src/store/redis.js";
import type { Alerter, AlertName } from "./alerts.js";
import type { LoadedMonitorConfig } from "./config.js";
import { Detector } from "./detector.js";
import { createAlerter, EventAlerts } from "./event-alerts.js";
import { MonitorMetrics } from "./metrics.js";
import { RecentEvents, TokenRates } from "./recent.js";
import { InFlight, loopFreshnessMs, scheduleTask } from "./schedule.js";
import { type MonitorServer, startMonitorServer } from "./server.js";
import { Settler } from "./settler.js";
import { Snapshotter } from "./snapshotter.js";
import { SpikeWatcher } from "./spike-watcher.js";

/** A started monitor: where it serves, and hooks for tests and the admin CLI. */
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

/** How startMonitor is run: by default it logs at config.log.level under its own id. */
export interface StartMonitorOptions {
  log?: Logger;
}

/** The monitor's parts, built and connected but not yet scheduled or serving. */
interface Parts {
  monitorId: string;
  log: Logger;
  metrics: MonitorMetrics;
  redis: RedisClient;
  alerter: Alerter;
  inherited: { name: AlertName; startsAt: string }[];
  events: EventAlerts;
  recent: RecentEvents;
  snapshotter: Snapshotter;
  settler: Settler;
  detector: Detector;
  tokenRates: TokenRates;
  spike: SpikeWatcher;
}

/**
 * The monitor: watches Redis every second, snapshots live tokens, re-seeds or invalidates them
 * after a data loss, watches the nodes for invalid-token spikes, and alerts.
 */
export async function startMonitor(
  loaded: LoadedMonitorConfig,
  opts: StartMonitorOptions = {},
): Promise<RunningMonitor> {
  const { config } = loaded;
  const m = config.monitor;
  const p = await assemble(loaded, opts);
  const { log, metrics, detector, snapshotter } = p;
  const work = new InFlight();
  const detectNow = async () => {
    await work.run(() => detector.pass());
  };
  const snapshotNow = () => work.run(() => snapshotter.take(detector.knownEpoch()));
  const tasks = [
    scheduleTask("detect", m.detectCron, detectNow, log),
    scheduleTask("snapshot", m.snapshotCron, snapshotNow, log),
  ];
  if (config.nodes.length)
    tasks.push(scheduleTask("spike", config.spike.scrapeCron, () => work.run(() => p.spike.scrape()), log));
  const health = { ...p, spike: config.spike, loopFreshMs: loopFreshnessMs(m.detectCron) };
  const server = await startMonitorServer({ host: m.host, port: m.port, metrics, health });
  logStarted(log, loaded, server.url);
  await detectNow().catch(() => {});
  p.events.reconcileInherited(p.inherited, {
    redisUnreachable: detector.unreachable !== undefined,
    spikeWatched: config.nodes.length > 0,
  });
  // A signal and the parent's exit may both ask: one shutdown.
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= shutDown(p, work, tasks, server);
    return closing;
  };
  return { url: server.url, port: server.port, metrics, log, detectNow, snapshotNow, close };
}

/** How long shutdown waits for a detection pass, snapshot or scrape still running. */
const DRAIN_MS = 5000;

/**
 * Stops in order: no new work; what runs (a pass re-seeding under the epoch lock, a snapshot
 * being written, a scrape) finishes, for DRAIN_MS at most; the epoch lock is given back while
 * Redis is still connected; then alerts are flushed and Redis disconnected.
 */
async function shutDown(
  p: Parts,
  work: InFlight,
  tasks: ScheduledTask[],
  server: MonitorServer,
): Promise<void> {
  const { log, detector, settler, events, alerter, redis } = p;
  detector.unwatchConnection(); // our own disconnect is no outage, and no more passes start
  const pass = detector.passing;
  const closing = work.close(DRAIN_MS, pass ? [pass] : []);
  for (const t of tasks) await t.destroy();
  if (!(await closing)) log.warn({ event: "shutdown_work_abandoned", waitedMs: DRAIN_MS });
  await settler.release();
  events.close();
  await server.close();
  alerter.close();
  await Promise.race([alerter.flush(), new Promise((r) => setTimeout(r, 2000))]);
  redis.disconnect();
}

/** Builds the parts in dependency order, with the last run's alerts and snapshot read back. */
async function assemble(loaded: LoadedMonitorConfig, opts: StartMonitorOptions): Promise<Parts> {
  const { config } = loaded;
  const m = config.monitor;
  const monitorId = m.id ?? `${hostname()}:${m.port}`;
  const log = opts.log ?? createLogger(config.log.level, monitorId);
  const metrics = new MonitorMetrics();
  const keys = new StoreKeys(config.store.prefix);
  makeStateDir(m.stateDir);
  const alerter = createAlerter(config, monitorId, log, metrics);
  const inherited = await alerter.restore();
  const recent = new RecentEvents();
  const events = new EventAlerts({ alerter, recent, holdMs: m.eventHoldSeconds * 1000 });
  const redis = connect(loaded);
  const file = join(m.stateDir, "snapshot.json");
  const maxAgeSeconds = m.snapshotMaxAgeSeconds;
  const snapshotter = new Snapshotter({ file, redis, keys, log, metrics, alerter, maxAgeSeconds });
  await snapshotter.load();
  const { onDataLoss } = m;
  const settler = new Settler({ redis, keys, log, metrics, events, snapshotter, monitorId, onDataLoss });
  const unreachableForMs = m.unreachableForSeconds * 1000;
  const detectorOptions = { redis, keys, log, metrics, alerter, events, settler, snapshotter };
  const detector = new Detector({ ...detectorOptions, unreachableForMs });
  // Start with a first look at Redis if it is there, so that a restart right after start-up
  // is seen as one.
  await waitForReady(redis, config.redis.connectTimeoutMs).catch(() => {});
  detector.watchConnection();
  const tokenRates = new TokenRates();
  const spike = new SpikeWatcher({ nodes: config.nodes, spike: config.spike, alerter, metrics, tokenRates });
  return {
    monitorId,
    log,
    metrics,
    redis,
    alerter,
    inherited,
    events,
    recent,
    snapshotter,
    settler,
    detector,
    tokenRates,
    spike,
  };
}

/** The state dir, created if need be and writable, or CONFIG_INVALID: one line, exit 2. */
function makeStateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    accessSync(dir, constants.W_OK);
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    throw new SigningClusterError(
      "CONFIG_INVALID",
      `monitor.stateDir ${dir} cannot be used: ${code ?? message}`,
    );
  }
}

/** The monitor's own Redis connection: short command timeouts, so a pass never hangs. */
function connect(loaded: LoadedMonitorConfig): RedisClient {
  return createRedisClient({
    redis: loaded.config.redis,
    commandTimeoutMs: 1000,
    password: loaded.redisPassword,
  });
}

function logStarted(log: Logger, { config }: LoadedMonitorConfig, url: string): void {
  const { webhookUrl, alertmanagerUrl } = config.alerts;
  const alertsTo = [webhookUrl && "webhook", alertmanagerUrl && "alertmanager"].filter(Boolean);
  log.info({
    event: "monitor_started",
    url,
    onDataLoss: config.monitor.onDataLoss,
    nodes: config.nodes.length,
    alertsTo: alertsTo.length ? alertsTo : "log only (alerts.enabled false)",
  });
}

/**
 * The on-call drill (issue 29, acceptance): five incidents against a local cluster of real
 * processes under a continuous signtool load, watched by a real Prometheus evaluating the shipped
 * prometheus/alerts.yml at the shipped intervals (prometheus/prometheus.yml's global, real `for:`),
 * and paged through a real Alertmanager running the shipped prometheus/alertmanager.yml with only
 * its receivers' URLs replaced by a local receiver that records when each notification arrives.
 * The monitor sends its own alerts to that Alertmanager too. For each incident it records which
 * alerts reached the pager (and from whom), how long after the incident began (resolves: after it
 * ended), whether builds failed, and what `signing-admin status` said a few seconds in. It writes
 * bench/results/drill.json and regenerates the "The on-call drill" section of docs/operations.md.
 *
 *   npm run drill                           all five incidents, ~24 minutes
 *   node dist/scripts/drill.js --render     the doc's section again from bench/results/drill.json
 *   DRILL_ONLY=forged-tokens npm run drill  some of them (docs/operations.md is then left alone,
 *                                           unless DRILL_DOC=1)
 *
 * A rig rather than a benchmark, so it lives here and not in bench/: it measures nothing about the
 * product's speed, nothing imports it, `npm run bench` must not run it (24 minutes), and it is built
 * only from the process rigs in scripts/ (bench/'s load helpers import test/). Its results JSON
 * goes beside the benchmarks' (bench/results/, git-ignored).
 *
 * Knobs: DRILL_CLIENTS (4 build machines, each running signtool on 3 files, then pausing
 * DRILL_PAUSE_MS, 1000), DRILL_BASELINE_S (60), DRILL_GAP_S (150: after each incident, before the
 * next), DRILL_TAIL_MAX_S (360: after the last, waiting for resolves), DRILL_FORGERS (3),
 * DRILL_KEEP=1 keeps the state dir (logs, configs) for a look afterwards.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { cpus, hostname, loadavg, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { AlertReceiver } from "./alert-receiver.js";
import { findAlertmanager, LocalAlertmanager } from "./alertmanager.js";
import { type DevState, prepareDevState, writeMonitorConfig } from "./dev-state.js";
import { NodeProcess } from "./node-process.js";
import { freePort, killedWithParent, RedisServer } from "./redis-server.js";

const root = resolve(fileURLToPath(import.meta.url), "../../..");
const envNumber = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const CLIENTS = envNumber("DRILL_CLIENTS", 4);
const FILES_PER_BUILD = 3;
const PAUSE_MS = envNumber("DRILL_PAUSE_MS", 1000);
const BASELINE_S = envNumber("DRILL_BASELINE_S", 60);
const GAP_S = envNumber("DRILL_GAP_S", 150);
const TAIL_MAX_S = envNumber("DRILL_TAIL_MAX_S", 360);
const FORGERS = envNumber("DRILL_FORGERS", 3);
const KEEP = process.env.DRILL_KEEP === "1";
/** Seconds after an incident began at which `signing-admin status` is run (and once after it ended). */
const STATUS_AT_S = [5, 30, 75];
const STATUS_AFTER_END_S = 10;
const POLL_MS = 5000;

const T0 = Date.now();
const log = (msg: string) => console.log(`[${((Date.now() - T0) / 1000).toFixed(1).padStart(7)} s] ${msg}`);

/** 36 s, 5m03s; negative values keep their sign. */
function dur(ms: number): string {
  const sign = ms < 0 ? "-" : "";
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${sign}${s} s`;
  return `${sign}${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

// ---------------------------------------------------------------------------------------------
// Prometheus: the shipped prometheus.yml with local targets and the local Alertmanager.

/**
 * prometheus/prometheus.yml with its targets replaced by this cluster's and its Alertmanager by
 * ours; its global (scrape and evaluation intervals) as shipped, and rule_files naming the
 * shipped prometheus/alerts.yml itself, not a copy.
 */
export function drillPrometheusConfig(nodes: string[], monitor: string, alertmanager: string): string {
  const shipped = parse(readFileSync(join(root, "prometheus/prometheus.yml"), "utf8")) as {
    global: Record<string, string>;
    rule_files: string[];
    alerting: unknown;
    scrape_configs: { job_name: string; static_configs: unknown }[];
  };
  const host = (u: string) => new URL(u).host;
  const targets: Record<string, string[]> = {
    "signing-nodes": nodes.map(host),
    "signing-monitor": [host(monitor)],
  };
  shipped.rule_files = [join(root, "prometheus/alerts.yml")];
  shipped.alerting = { alertmanagers: [{ static_configs: [{ targets: [host(alertmanager)] }] }] };
  for (const job of shipped.scrape_configs) {
    const t = targets[job.job_name];
    if (!t) throw new Error(`prometheus.yml has a job ${job.job_name} the drill has no targets for`);
    job.static_configs = [{ targets: t }];
  }
  return `# Written by scripts/drill.ts from prometheus/prometheus.yml: local targets and Alertmanager; global and alerts.yml as shipped.\n${stringify(shipped)}`;
}

class LocalPrometheus {
  private stderr = "";
  private constructor(
    private readonly proc: ChildProcess,
    readonly url: string,
  ) {
    proc.stderr?.on("data", (d: Buffer) => {
      this.stderr = `${this.stderr}${d}`.slice(-4000);
    });
  }

  static async start(dir: string, config: string): Promise<LocalPrometheus> {
    mkdirSync(join(dir, "data"), { recursive: true });
    const configFile = join(dir, "prometheus.yml");
    writeFileSync(configFile, config);
    const port = await freePort();
    const [cmd, argv] = killedWithParent("prometheus", [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ]);
    const p = new LocalPrometheus(
      spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe"] }),
      `http://127.0.0.1:${port}`,
    );
    const deadline = Date.now() + 30_000;
    while (!(await fetch(`${p.url}/-/ready`).catch(() => undefined))?.ok) {
      if (p.proc.exitCode !== null) throw new Error(`prometheus exited: ${p.stderr}`);
      if (Date.now() > deadline) throw new Error(`prometheus not ready: ${p.stderr}`);
      await sleep(200);
    }
    return p;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGTERM");
    await exited;
  }
}

async function getJson<T>(url: string): Promise<T | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
    return res.ok ? ((await res.json()) as T) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// What Prometheus and Alertmanager hold, polled: explains a page that came late or never.

const sourceOf = (labels: Record<string, string>) => (labels.monitor ? "monitor" : "Prometheus");
const labelKey = (labels: Record<string, string>) =>
  JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));

interface PromAlertRecord {
  alertname: string;
  labels: Record<string, string>;
  /** Prometheus' activeAt: when it went pending. */
  activeAt: string;
  pendingSeen?: number;
  firingSeen?: number;
  /** First poll without it after it was seen: resolved (or back to inactive). */
  goneSeen?: number;
}

interface AmAlertRecord {
  alertname: string;
  source: string;
  labels: Record<string, string>;
  startsAt: string;
  firstSeen: number;
  lastSeen: number;
  states: string[];
  inhibitedBy: string[];
}

class Watcher {
  readonly prom = new Map<string, PromAlertRecord>();
  readonly am = new Map<string, AmAlertRecord>();
  promActive = 0;
  amActive = 0;
  /** The 1-minute load average at each poll: the machine is shared. */
  readonly load: { at: number; load1: number }[] = [];
  private running = true;
  private readonly loop: Promise<void>;

  constructor(
    private readonly prometheusUrl: string,
    private readonly alertmanagerUrl: string,
  ) {
    this.loop = (async () => {
      while (this.running) {
        await this.poll();
        await sleep(POLL_MS);
      }
    })();
  }

  private async poll(): Promise<void> {
    const now = Date.now();
    this.load.push({ at: now, load1: loadavg()[0] ?? 0 });
    const p = await getJson<{
      data: { alerts: { labels: Record<string, string>; state: string; activeAt: string }[] };
    }>(`${this.prometheusUrl}/api/v1/alerts`);
    if (p) {
      const seen = new Set<string>();
      for (const a of p.data.alerts) {
        const key = `${labelKey(a.labels)}@${a.activeAt}`;
        seen.add(key);
        let r = this.prom.get(key);
        if (!r) {
          r = { alertname: a.labels.alertname ?? "?", labels: a.labels, activeAt: a.activeAt };
          this.prom.set(key, r);
          log(`Prometheus: ${r.alertname} ${a.state}${a.labels.instance ? ` (${a.labels.instance})` : ""}`);
        }
        if (a.state === "pending") r.pendingSeen ??= now;
        if (a.state === "firing" && r.firingSeen === undefined) {
          r.firingSeen = now;
          if (r.pendingSeen !== undefined) log(`Prometheus: ${r.alertname} firing`);
        }
      }
      for (const [key, r] of this.prom)
        if (!seen.has(key) && r.goneSeen === undefined) {
          r.goneSeen = now;
          log(`Prometheus: ${r.alertname} ${r.firingSeen ? "resolved" : "pending → inactive"}`);
        }
      this.promActive = p.data.alerts.length;
    }
    const am = await getJson<
      {
        labels: Record<string, string>;
        startsAt: string;
        status: { state: string; inhibitedBy: string[] };
      }[]
    >(`${this.alertmanagerUrl}/api/v2/alerts`);
    if (am) {
      for (const a of am) {
        const key = `${labelKey(a.labels)}@${a.startsAt}`;
        let r = this.am.get(key);
        if (!r) {
          r = {
            alertname: a.labels.alertname ?? "?",
            source: sourceOf(a.labels),
            labels: a.labels,
            startsAt: a.startsAt,
            firstSeen: now,
            lastSeen: now,
            states: [],
            inhibitedBy: [],
          };
          this.am.set(key, r);
        }
        r.lastSeen = now;
        if (!r.states.includes(a.status.state)) r.states.push(a.status.state);
        for (const i of a.status.inhibitedBy ?? []) if (!r.inhibitedBy.includes(i)) r.inhibitedBy.push(i);
      }
      this.amActive = am.length;
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

// ---------------------------------------------------------------------------------------------
// The pager: what the local receiver got, as alert instances (an alert and its startsAt).

interface Notified {
  alertname: string;
  source: string;
  severity: string;
  receiver: string;
  labels: Record<string, string>;
  startsAt: string;
  firingAt?: number;
  resolvedAt?: number;
  /** How many notifications carried it (Alertmanager repeats a group's alerts). */
  notifications: number;
}

function readPager(file: string): Notified[] {
  if (!existsSync(file)) return [];
  const out = new Map<string, Notified>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    const n = JSON.parse(line) as {
      at: string;
      receiver: string;
      status: string;
      labels: Record<string, string>;
      startsAt: string;
    };
    const key = `${labelKey(n.labels)}@${n.startsAt}`;
    let r = out.get(key);
    if (!r) {
      r = {
        alertname: n.labels.alertname ?? "?",
        source: sourceOf(n.labels),
        severity: n.labels.severity ?? "?",
        receiver: n.receiver,
        labels: n.labels,
        startsAt: n.startsAt,
        notifications: 0,
      };
      out.set(key, r);
    }
    r.notifications++;
    const at = Date.parse(n.at);
    if (n.status === "firing") r.firingAt ??= at;
    if (n.status === "resolved") r.resolvedAt ??= at;
  }
  return [...out.values()];
}

/** One alert the monitor raised, from its own log (alert_firing, alert_resolved): what it saw. */
interface MonitorAlert {
  alertname: string;
  firedAt: number;
  severity?: string;
  resolvedAt?: number;
}

function readMonitorAlerts(file: string): MonitorAlert[] {
  if (!existsSync(file)) return [];
  const out: MonitorAlert[] = [];
  const open = new Map<string, MonitorAlert>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.includes('"alert_')) continue;
    let e: { event?: string; alert?: string; severity?: string; time?: string; since?: string };
    try {
      e = JSON.parse(line);
    } catch {
      continue;
    }
    if (!e.alert || !e.time) continue;
    const at = Date.parse(e.time);
    if (e.event === "alert_firing") {
      // Fired again by a restarted monitor (since: its first start): the same alert.
      if (e.since && open.has(e.alert)) continue;
      const a: MonitorAlert = {
        alertname: e.alert,
        firedAt: e.since ? Date.parse(e.since) : at,
        ...(e.severity ? { severity: e.severity } : {}),
      };
      open.set(e.alert, a);
      out.push(a);
    } else if (e.event === "alert_resolved") {
      const a = open.get(e.alert);
      if (a) a.resolvedAt = at;
      open.delete(e.alert);
    }
  }
  return out;
}

/** The monitor's alert reached the pager as firing (Alertmanager keeps its startsAt). */
const deliveredFromMonitor = (a: MonitorAlert, pager: Notified[]) =>
  pager.some(
    (n) =>
      n.source === "monitor" &&
      n.alertname === a.alertname &&
      n.firingAt !== undefined &&
      Math.abs(Date.parse(n.startsAt) - a.firedAt) < 5000,
  );

// ---------------------------------------------------------------------------------------------
// The load: build machines running signtool, each run a build's signing step.

interface Build {
  client: number;
  start: number;
  end: number;
  exit: number | null;
  signal: string | null;
  /** Last lines of stderr when it failed. */
  error?: string;
}

function run(
  program: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const [cmd, argv] = killedWithParent(program, args);
    const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr });
    });
  });
}

const signtool = join(root, "dist/src/bin/signtool.js");
const admin = join(root, "dist/src/bin/signing-admin.js");

class BuildLoad {
  readonly builds: Build[] = [];
  private running = true;
  private readonly loops: Promise<void>[] = [];

  private constructor(
    private readonly dir: string,
    private readonly hosts: string[],
    private readonly trustedKey: string,
  ) {}

  /** Each build machine downloads a token (signtool token, 2 h), then signs until stop(). */
  static async start(
    dir: string,
    nodes: string[],
    issuer: { user: string; passwordFile: string },
    trustedKey: string,
  ): Promise<BuildLoad> {
    const hosts = nodes.map((u) => new URL(u).host);
    const load = new BuildLoad(dir, hosts, trustedKey);
    for (let i = 0; i < CLIENTS; i++) {
      const work = join(dir, `client-${i}`);
      mkdirSync(join(work, "out"), { recursive: true });
      const token = await run(
        process.execPath,
        [
          signtool,
          "token",
          ...hosts.flatMap((h) => ["-H", h]),
          "--user",
          issuer.user,
          "--password-file",
          issuer.passwordFile,
          "--slave-ip",
          "127.0.0.1",
          "--duration",
          "2h",
          "-o",
          join(work, "token"),
        ],
        60_000,
      );
      if (token.code !== 0) throw new Error(`signtool token failed: ${token.stderr}`);
    }
    for (let i = 0; i < CLIENTS; i++) load.loops.push(load.loop(i));
    return load;
  }

  private async loop(i: number): Promise<void> {
    const work = join(this.dir, `client-${i}`);
    for (let n = 0; this.running; n++) {
      const files = Array.from({ length: FILES_PER_BUILD }, (_, f) => {
        const file = join(work, `b${n}-f${f}.bin`);
        writeFileSync(file, randomBytes(1000 + Math.floor(Math.random() * 30_000)));
        return file;
      });
      const start = Date.now();
      const r = await run(
        process.execPath,
        [
          signtool,
          "sign",
          "-t",
          join(work, "token"),
          "-n",
          join(work, "nonce"),
          ...this.hosts.flatMap((h) => ["-H", h]),
          "-f",
          "gpg",
          "--trusted-key",
          `gpg=${this.trustedKey}`,
          "--output-dir",
          join(work, "out"),
          ...files,
        ],
        1_000_000,
      );
      const build: Build = { client: i, start, end: Date.now(), exit: r.code, signal: r.signal };
      if (r.code !== 0) {
        build.error = r.stderr.trim().split("\n").slice(-3).join(" | ");
        log(`BUILD FAILED (client ${i}, exit ${r.code ?? r.signal}): ${build.error}`);
      }
      this.builds.push(build);
      for (const f of files) rmSync(f, { force: true });
      rmSync(join(work, "out"), { recursive: true, force: true });
      mkdirSync(join(work, "out"));
      if (this.running) await sleep(PAUSE_MS);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

// ---------------------------------------------------------------------------------------------
// Forged tokens: well-formed, signed with a key nobody has (bad_signature).

class Forgers {
  readonly statuses: Record<string, number> = {};
  sent = 0;
  private running = true;
  private readonly loops: Promise<void>[];

  constructor(nodes: string[]) {
    this.loops = Array.from({ length: FORGERS }, async (_, i) => {
      for (let n = i; this.running; n++) {
        const url = nodes[n % nodes.length] as string;
        const payload = Buffer.from(JSON.stringify({ id: randomBytes(16).toString("hex") })).toString(
          "base64url",
        );
        const token = `v1.dev1.${payload}.${randomBytes(32).toString("base64url")}`;
        const data = randomBytes(256);
        const body = new FormData();
        body.set("sha1", createHash("sha1").update(data).digest("hex"));
        body.set("filename", "artifact.bin");
        body.set("token", token);
        body.set("nonce", "");
        body.set("filedata", new Blob([data]), "upload.bin");
        let status: string;
        try {
          const res = await fetch(`${url}/sign/gpg`, {
            method: "POST",
            body,
            signal: AbortSignal.timeout(5000),
          });
          await res.arrayBuffer();
          status = String(res.status);
        } catch (err) {
          status = (err as Error).name;
        }
        this.sent++;
        this.statuses[status] = (this.statuses[status] ?? 0) + 1;
        await sleep(50);
      }
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

// ---------------------------------------------------------------------------------------------
// signing-admin status, as the on-call engineer runs it.

interface StatusSample {
  /** Seconds after the incident began. */
  atS: number;
  when: "during" | "after";
  exit: number | null;
  ms: number;
  /** The verdict block: `status: …`, its problems and notices. */
  summary: string[];
  output: string;
}

async function adminStatus(
  clusterFile: string,
  incidentStart: number,
  endedAt?: number,
): Promise<StatusSample> {
  const started = Date.now();
  const r = await run(process.execPath, [admin, "--cluster", clusterFile, "status"], 30_000);
  const lines = r.stdout.split("\n");
  const at = lines.findIndex((l) => l.startsWith("status:"));
  const summary = at >= 0 ? lines.slice(at).filter((l) => l.trim()) : r.stderr.trim().split("\n").slice(0, 3);
  return {
    atS: Math.round((started - incidentStart) / 1000),
    when: endedAt !== undefined && started >= endedAt ? "after" : "during",
    exit: r.code,
    ms: Date.now() - started,
    summary,
    output: `${r.stdout}${r.stderr ? `\n[stderr]\n${r.stderr}` : ""}`,
  };
}

// ---------------------------------------------------------------------------------------------
// The cluster: npm start's processes (scripts/local-cluster.ts), each ours to kill.

interface Cluster {
  dir: string;
  redis: RedisServer;
  nodes: NodeProcess[];
  monitor: NodeProcess;
  receiver: AlertReceiver;
  alertmanager: LocalAlertmanager;
  prometheus: LocalPrometheus;
  clusterFile: string;
  pagerLog: string;
  issuer: { user: string; passwordFile: string };
  gpgPublicKey: string;
}

async function startCluster(dir: string): Promise<Cluster> {
  // With an append-only file, so that "down 93 s" comes back with its data (a restart without
  // loss); "restarted empty" removes it first.
  const redis = await RedisServer.start(["--appendonly", "yes"]);
  const state = await prepareDevState(join(dir, "state"), redis.url);
  const nodes = await startNodes(state.configFile, dir);
  const pagerLog = join(dir, "pager.log");
  const { receiver, alertmanager } = await startPager(dir, pagerLog);
  const urls = nodes.map((n) => n.url);
  const monitorConfig = writeMonitorConfig(join(dir, "state"), redis.url, urls, await freePort(), {
    alertmanagerUrl: alertmanager.url,
  });
  const monitor = startMonitor(monitorConfig.configFile, monitorConfig.config, dir);
  await monitor.ready();
  const prometheus = await LocalPrometheus.start(
    join(dir, "prometheus"),
    drillPrometheusConfig(urls, monitor.url, alertmanager.url),
  );
  const clusterFile = join(dir, "cluster.json");
  writeClusterFile(clusterFile, { redisUrl: redis.url, nodes: urls, monitor: monitor.url, dir, state });
  return {
    dir,
    redis,
    nodes,
    monitor,
    receiver,
    alertmanager,
    prometheus,
    clusterFile,
    pagerLog,
    issuer: { user: state.issuer.user, passwordFile: state.issuer.passwordFile },
    gpgPublicKey: state.keys.gpg.publicKeyFile,
  };
}

/** The three signing nodes, local-0 to local-2, each on a port of its own; ready when it returns. */
async function startNodes(configFile: string, dir: string): Promise<NodeProcess[]> {
  const nodes: NodeProcess[] = [];
  for (let i = 0; i < 3; i++)
    nodes.push(
      new NodeProcess({
        configFile,
        port: await freePort(),
        id: `local-${i}`,
        logFile: join(dir, `node-${i}.log`),
      }),
    );
  await Promise.all(nodes.map((n) => n.ready()));
  return nodes;
}

/**
 * The pager: a local receiver recording each notification in `pagerLog`, behind an Alertmanager
 * running the shipped configuration (its timings too) with only the receivers' URLs replaced.
 */
async function startPager(
  dir: string,
  pagerLog: string,
): Promise<{ receiver: AlertReceiver; alertmanager: LocalAlertmanager }> {
  const receiver = await AlertReceiver.start(pagerLog, (line) => log(`PAGER ${line}`));
  const program = findAlertmanager();
  if (!program) throw new Error("no alertmanager (apt install prometheus-alertmanager)");
  const alertmanager = await LocalAlertmanager.start(
    program,
    join(dir, "alertmanager"),
    receiver.url,
    "shipped",
  );
  return { receiver, alertmanager };
}

/**
 * cluster.json: where `signing-admin --cluster` (the status samples) finds Redis, the nodes, the
 * monitor and the keys.
 */
function writeClusterFile(
  file: string,
  c: { redisUrl: string; nodes: string[]; monitor: string; dir: string; state: DevState },
): void {
  writeFileSync(
    file,
    JSON.stringify(
      {
        redisUrl: c.redisUrl,
        nodes: c.nodes,
        monitor: c.monitor,
        monitorStateDir: join(c.dir, "state", "monitor"),
        issuer: { user: c.state.issuer.user, passwordFile: c.state.issuer.passwordFile },
        keys: { gpg: c.state.keys.gpg.publicKeyFile, sshsig: c.state.keys.sshsig.publicKeyFile },
      },
      null,
      2,
    ),
  );
}

function startMonitor(configFile: string, config: Record<string, unknown>, dir: string): NodeProcess {
  const port = (config.monitor as { port: number }).port;
  return new NodeProcess({
    program: "signing-monitor",
    configFile,
    port,
    id: "local-monitor",
    logFile: join(dir, "monitor.log"),
  });
}

// ---------------------------------------------------------------------------------------------
// The incidents.

interface Incident {
  id: string;
  title: string;
  /** How long the fault lasts, ms (0: an event). */
  durationMs: number;
  inject(c: Cluster): Promise<void>;
  recover(c: Cluster): Promise<void>;
}

let forgers: Forgers | undefined;
let forgedSent = 0;
let forgedStatuses: Record<string, number> = {};

const INCIDENTS: Incident[] = [
  {
    id: "data-loss",
    title: "Redis restarted empty (SIGKILL, data files removed, started again)",
    durationMs: 0,
    async inject(c) {
      await c.redis.kill("SIGKILL");
      for (const f of readdirSync(c.redis.dir))
        rmSync(join(c.redis.dir, f), { recursive: true, force: true });
      await c.redis.restart();
    },
    async recover() {},
  },
  {
    id: "redis-down",
    title: "Redis down 93 s (SIGTERM, started again with its data)",
    durationMs: 93_000,
    async inject(c) {
      await c.redis.kill("SIGTERM");
    },
    async recover(c) {
      await c.redis.restart();
    },
  },
  {
    id: "node-kill",
    title: "Node local-1 SIGKILLed for 2 minutes, then started again",
    durationMs: 120_000,
    async inject(c) {
      await c.nodes[1]?.stop("SIGKILL");
    },
    async recover(c) {
      const old = c.nodes[1];
      if (!old) return;
      const node = new NodeProcess(old.opts);
      c.nodes[1] = node;
      await node.ready();
    },
  },
  {
    id: "forged-tokens",
    title: `60 s of forged tokens (${FORGERS} clients, each one request after another, round the nodes)`,
    durationMs: 60_000,
    async inject(c) {
      forgers = new Forgers(c.nodes.map((n) => n.url));
    },
    async recover() {
      await forgers?.stop();
      forgedSent = forgers?.sent ?? 0;
      forgedStatuses = forgers?.statuses ?? {};
    },
  },
  {
    id: "monitor-kill",
    title: "The monitor SIGKILLed for 2 minutes, then started again",
    durationMs: 120_000,
    async inject(c) {
      await c.monitor.stop("SIGKILL");
    },
    async recover(c) {
      c.monitor = new NodeProcess(c.monitor.opts);
      await c.monitor.ready();
    },
  },
];

interface IncidentResult {
  id: string;
  title: string;
  durationMs: number;
  start: number;
  end: number;
  /** Until the next incident began (or the drill ended): builds and alerts are counted in it. */
  windowEnd: number;
  builds: { runs: number; failed: number; slowestMs: number; medianMs: number; errors: string[] };
  /** The machine's 1-minute load average in the window. */
  load1: { min: number; median: number; max: number };
  status: StatusSample[];
  pager: Notified[];
  prometheus: PromAlertRecord[];
  alertmanager: AmAlertRecord[];
  /** What the monitor raised, from its log, whether or not it reached the pager. */
  monitorAlerts: (MonitorAlert & { delivered: boolean })[];
  /** Token checks the nodes accepted without Redis (`tokenCheck: degraded` in their logs), per node. */
  degradedChecks?: {
    node: string;
    count: number;
    firstAt: number;
    lastAt: number;
    /** The node's warning and error log lines from 5 s before the first to 5 s after the last. */
    warningsAround: number;
  }[];
  extra?: Record<string, unknown>;
}

/** Everything a run recorded: bench/results/drill.json, and what the doc is rendered from. */
interface DrillData {
  meta: {
    date: string;
    commit: string;
    machine: {
      hostname: string;
      cpus: number;
      cpuModel: string;
      memGiB: number;
      load1: { min: number; median: number; max: number };
    };
    versions: Record<string, string>;
    intervals: Record<string, string>;
    alertmanagerRoute: Record<string, unknown>;
  };
  settings: {
    clients: number;
    filesPerBuild: number;
    pauseMs: number;
    baselineS: number;
    gapS: number;
    tailMaxS: number;
    forgers: number;
    statusAtS: number[];
    pollMs?: number;
  };
  t0: number;
  totalMs: number;
  baseline: IncidentResult["builds"];
  beforeDrill: Notified[];
  incidents: IncidentResult[];
  pager: Notified[];
  builds: Build[];
  /** The signing nodes, in order: their ids (node logs) and URLs (Prometheus' instance label). */
  nodes?: { id: string; url: string }[];
  stateDir?: string;
}

/** How far before an incident's start its node-log evidence is shown: what came just before. */
const EVIDENCE_BEFORE_MS = 60_000;

/** Fills each incident's degradedChecks from the nodes' logs in the run's state dir. */
function addNodeEvidence(data: DrillData, dir: string): void {
  const checks: { node: string; at: number }[] = [];
  const warnings: { node: string; at: number }[] = [];
  for (const f of readdirSync(dir).filter((x) => /^node-\d+\.log$/.test(x)))
    for (const line of readFileSync(join(dir, f), "utf8").split("\n")) {
      const m = /^\{"level":(\d+),"time":"([^"]+)","node":"([^"]+)"/.exec(line);
      if (!m?.[2] || !m[3]) continue;
      const at = { node: m[3], at: Date.parse(m[2]) };
      if (Number(m[1]) >= 40) warnings.push(at);
      if (line.includes('"tokenCheck":"degraded"')) checks.push(at);
    }
  for (const r of data.incidents) {
    const by = new Map<string, NonNullable<IncidentResult["degradedChecks"]>[number]>();
    for (const c of checks) {
      if (c.at < r.start - EVIDENCE_BEFORE_MS || c.at >= r.windowEnd) continue;
      const e = by.get(c.node) ?? { node: c.node, count: 0, firstAt: c.at, lastAt: c.at, warningsAround: 0 };
      e.count++;
      e.firstAt = Math.min(e.firstAt, c.at);
      e.lastAt = Math.max(e.lastAt, c.at);
      by.set(c.node, e);
    }
    for (const e of by.values())
      e.warningsAround = warnings.filter(
        (w) => w.node === e.node && w.at >= e.firstAt - 5000 && w.at <= e.lastAt + 5000,
      ).length;
    r.degradedChecks = [...by.values()].sort((a, b) => a.node.localeCompare(b.node));
  }
}

// ---------------------------------------------------------------------------------------------
// The report.

/** Each shipped rule's `for:` as written, and in seconds. */
const RULE_FOR = new Map<string, string>();
const RULE_FOR_S = new Map<string, number>();
for (const g of (
  parse(readFileSync(join(root, "prometheus/alerts.yml"), "utf8")) as {
    groups: { rules: { alert?: string; for?: string }[] }[];
  }
).groups)
  for (const rule of g.rules) {
    if (!rule.alert) continue;
    const text = rule.for ?? "0s";
    RULE_FOR.set(rule.alert, text);
    const unit: Record<string, number> = { s: 1, m: 60, h: 3600 };
    RULE_FOR_S.set(rule.alert, Number.parseFloat(text) * (unit[text.replace(/^[\d.]+/, "")] ?? 1));
  }

/** A build's time: 0.5 s, 12.3 s. */
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function loadSummary(values: number[]): { min: number; median: number; max: number } {
  const v = [...values].sort((a, b) => a - b);
  return { min: v[0] ?? 0, median: v[Math.floor(v.length / 2)] ?? 0, max: v.at(-1) ?? 0 };
}

function buildsIn(builds: Build[], from: number, to: number): IncidentResult["builds"] {
  const inWindow = builds.filter((b) => b.end >= from && b.start < to);
  const times = inWindow.map((b) => b.end - b.start).sort((a, b) => a - b);
  const failed = inWindow.filter((b) => b.exit !== 0);
  return {
    runs: inWindow.length,
    failed: failed.length,
    slowestMs: times.at(-1) ?? 0,
    medianMs: times[Math.floor(times.length / 2)] ?? 0,
    errors: [...new Set(failed.map((b) => b.error ?? `exit ${b.exit ?? b.signal}`))].slice(0, 5),
  };
}

const inWindow = (t: number, r: { start: number; windowEnd: number }) =>
  t >= r.start - 1000 && t < r.windowEnd;

/** The pager's notifications of one severity, one line per alert name and source. */
function pagerCell(r: IncidentResult, severity: "page" | "ticket"): string {
  const groups = new Map<string, Notified[]>();
  for (const n of r.pager.filter((x) => x.severity === severity)) {
    const key = `${n.alertname} (${n.source})`;
    groups.set(key, [...(groups.get(key) ?? []), n]);
  }
  if (!groups.size) return "none";
  const first = (ns: Notified[]) =>
    Math.min(...ns.map((n) => n.firingAt ?? n.resolvedAt ?? Number.POSITIVE_INFINITY));
  return [...groups]
    .sort(([, a], [, b]) => first(a) - first(b))
    .map(([key, ns]) => {
      const fired = ns.filter((n) => n.firingAt !== undefined).map((n) => n.firingAt as number);
      const resolved = ns.filter((n) => n.resolvedAt !== undefined).map((n) => n.resolvedAt as number);
      const instance = ns.length === 1 && ns[0]?.labels.instance ? ` ${ns[0].labels.instance}` : "";
      const count = ns.length > 1 ? ` ×${ns.length}` : "";
      const when = fired.length ? `+${dur(Math.min(...fired) - r.start)}` : "never as firing, only resolved";
      const end =
        resolved.length === ns.length
          ? `resolved ${dur(Math.max(...resolved) - r.end)} after the end`
          : resolved.length
            ? `${ns.length - resolved.length} of ${ns.length} never resolved`
            : "never resolved";
      return `${key.replace(" (", `${count}${instance} (`)} ${when}, ${end}`;
    })
    .join("<br>");
}

function statusCell(s: StatusSample | undefined): string {
  if (!s) return "-";
  const lines = s.summary.slice(0, 4).map((l) => l.trim().replace(/\|/g, "\\|"));
  const more = s.summary.length > 4 ? ` (+${s.summary.length - 4} lines)` : "";
  return `exit ${s.exit}: ${lines.map((l) => `\`${l.length > 160 ? `${l.slice(0, 157)}…` : l}\``).join("<br>")}${more}`;
}

/** Prometheus' instance label (host:port) → the node's id, from the run's node list. */
const nodeIdOf = (data: DrillData, instance: string | undefined) =>
  instance ? (data.nodes?.find((n) => new URL(n.url).host === instance)?.id ?? instance) : undefined;

/**
 * The alerts that inhibit `alertname` in the shipped prometheus/alertmanager.yml (its
 * inhibit_rules, matched on alertname), for naming them in the findings.
 */
function inhibitorsOf(alertname: string): string {
  const config = parse(readFileSync(join(root, "prometheus/alertmanager.yml"), "utf8")) as {
    inhibit_rules?: { source_matchers?: string[]; target_matchers?: string[] }[];
  };
  const nameOf = (matchers: string[] | undefined) =>
    matchers?.map((m) => /^alertname(=~?)"(.*)"$/.exec(m)).find((m) => m) ?? undefined;
  const sources = (config.inhibit_rules ?? []).flatMap((rule) => {
    const target = nameOf(rule.target_matchers);
    const source = nameOf(rule.source_matchers);
    if (!target || !source) return [];
    const hit =
      target[1] === "=~" ? new RegExp(`^(?:${target[2]})$`).test(alertname) : target[2] === alertname;
    return hit ? [source[2] as string] : [];
  });
  return sources.join(" or ") || "another alert";
}

/** Prometheus re-sends a resolved alert to Alertmanager this long (its resolvedRetention). */
const PROMETHEUS_RESOLVED_RESEND_MS = 15 * 60_000;

/**
 * Why an alert that fired was never notified as firing, from what Alertmanager does: a new group
 * waits group_wait before its first notification; a group that still exists notifies only at
 * its group_interval ticks (a Prometheus alert's group lives on while Prometheus re-sends the
 * resolved alert, 15 min); an alert that fired and resolved between two notifications of its
 * group is told to nobody.
 */
function whyUndelivered(
  data: DrillData,
  alertname: string,
  source: string,
  firedAt: number,
  goneAt?: number,
  severity?: string,
): string {
  const route = data.meta.alertmanagerRoute;
  const wait = String(route.group_wait);
  const interval = String(
    severity === "page" ? (route.page_group_interval ?? route.group_interval) : route.group_interval,
  );
  const lived = goneAt !== undefined ? goneAt - firedAt : undefined;
  const firedFor = lived !== undefined ? `fired for ${dur(lived)}` : "fired";
  const waitMs = Number.parseFloat(wait) * (wait.endsWith("m") ? 60_000 : 1000);
  if (lived !== undefined && lived <= waitMs + 5000)
    return `${firedFor}, resolved within Alertmanager's group_wait of ${wait}: never notified`;
  const earlier = data.pager
    .filter(
      (n) =>
        source === "Prometheus" &&
        n.alertname === alertname &&
        n.source === source &&
        n.resolvedAt !== undefined &&
        n.resolvedAt < firedAt &&
        n.resolvedAt > firedAt - PROMETHEUS_RESOLVED_RESEND_MS,
    )
    .map((n) => n.resolvedAt as number);
  if (earlier.length)
    return `${firedFor}, resolved before its next notification: its Alertmanager group, kept open by the earlier ${alertname} (resolved ${dur(firedAt - Math.max(...earlier))} before; Prometheus re-sends resolved alerts for 15 min), notifies only every ${interval}`;
  return `${firedFor}: never notified`;
}

/** An alert's labels other than its name and severity, a node named by its id: ` (local-1, breaker=jobs)`. */
function describeLabels(data: DrillData, labels: Record<string, string>): string {
  const parts = Object.entries(labels)
    .filter(([k]) => !["alertname", "severity", "service", "monitor"].includes(k))
    .map(([k, v]) => (k === "instance" ? (nodeIdOf(data, v) ?? v) : `${k}=${v}`));
  return parts.length ? ` (${parts.join(", ")})` : "";
}

/** What the record says an on-call engineer would not learn, or learn late. */
function missed(r: IncidentResult, data: DrillData): string[] {
  return [
    ...latePages(r),
    ...opaqueRedisLoss(r),
    ...undeliveredPrometheusAlerts(r, data),
    ...undeliveredMonitorAlerts(r, data),
    ...earlierDegradedChecks(r, data),
    ...pendingNeverFired(r),
    ...statusBuildsAndResolves(r),
  ];
}

/** No page at all, pages that came only once it was over, and all-clears that came long after. */
function latePages(r: IncidentResult): string[] {
  const out: string[] = [];
  const pages = r.pager.filter((n) => n.severity === "page" && n.firingAt !== undefined);
  const first = Math.min(...pages.map((n) => n.firingAt as number));
  if (!pages.length) out.push("no page at all");
  else if (r.durationMs > 0 && first > r.end) out.push(`first page ${dur(first - r.end)} after it was over`);
  if (r.durationMs > 0) {
    const byName = new Map<string, Notified[]>();
    for (const n of pages)
      byName.set(`${n.alertname} (${n.source})`, [...(byName.get(`${n.alertname} (${n.source})`) ?? []), n]);
    for (const [name, ns] of byName) {
      const at = Math.min(...ns.map((n) => n.firingAt as number));
      const held = r.alertmanager.some(
        (a) => `${a.alertname} (${a.source})` === name && a.inhibitedBy.length,
      );
      if (at > r.end && at !== first)
        out.push(
          `${name} paged ${dur(at - r.end)} after it was over${held ? `, once the inhibiting ${inhibitorsOf(ns[0]?.alertname ?? "")} had resolved` : ""}`,
        );
      const resolved = ns.filter((n) => n.resolvedAt !== undefined).map((n) => n.resolvedAt as number);
      if (resolved.length === ns.length && Math.max(...resolved) - r.end > 120_000)
        out.push(`all clear for ${name} only ${dur(Math.max(...resolved) - r.end)} after it was over`);
    }
  }
  return out;
}

/** The monitor's account of losing Redis (status' RECENT) without the connection's own error. */
function opaqueRedisLoss(r: IncidentResult): string[] {
  const opaque = r.status
    .flatMap((x) => x.summary)
    .find(
      (l) =>
        /Stream isn't writeable/.test(l) &&
        !/ECONN|connect |ETIMEDOUT|ENOTFOUND/.test(l) &&
        // An event of this incident's, not one of an earlier incident still listed.
        Date.parse(/\d{4}-\d\d-\d\dT[\d:.]+Z/.exec(l)?.[0] ?? "") >= r.start - 1000,
    );
  if (!opaque) return [];
  return [
    `\`status\` (from the monitor's events) says "${opaque.replace(/^.*?: (the monitor cannot reach)/, "$1").trim()}": not the connection's own error`,
  ];
}

/** Alerts Prometheus fired that never reached the pager as firing, per alert name: where, and why not. */
function undeliveredPrometheusAlerts(r: IncidentResult, data: DrillData): string[] {
  const undelivered = new Map<string, { nodes: Set<string>; why: Set<string> }>();
  for (const p of r.prometheus.filter((x) => x.firingSeen !== undefined)) {
    const delivered = r.pager.some(
      (n) => n.alertname === p.alertname && n.source === "Prometheus" && n.firingAt,
    );
    if (delivered) continue;
    const am = r.alertmanager.filter((a) => a.alertname === p.alertname && a.source === "Prometheus");
    const by = [...new Set(am.flatMap((a) => a.inhibitedBy))];
    const u = undelivered.get(p.alertname) ?? { nodes: new Set(), why: new Set() };
    const node = nodeIdOf(data, p.labels.instance);
    if (node) u.nodes.add(node);
    u.why.add(
      by.length
        ? `inhibited in Alertmanager (the shipped inhibit rule: ${inhibitorsOf(p.alertname)} fired)`
        : whyUndelivered(
            data,
            p.alertname,
            "Prometheus",
            p.firingSeen as number,
            p.goneSeen,
            p.labels.severity,
          ),
    );
    undelivered.set(p.alertname, u);
  }
  return [...undelivered].map(
    ([name, u]) =>
      `Prometheus fired ${name}${u.nodes.size ? ` (${[...u.nodes].sort().join(", ")})` : ""} +${dur(Math.min(...r.prometheus.filter((p) => p.alertname === name && p.firingSeen).map((p) => p.firingSeen as number)) - r.start)}: ${[...u.why].join("; ")}`,
  );
}

/** Alerts the monitor fired (its log) that never reached the pager, and why not. */
function undeliveredMonitorAlerts(r: IncidentResult, data: DrillData): string[] {
  return r.monitorAlerts
    .filter((x) => !x.delivered)
    .map(
      (a) =>
        `the monitor fired ${a.alertname} +${dur(a.firedAt - r.start)}: ${whyUndelivered(data, a.alertname, "monitor", a.firedAt, a.resolvedAt, a.severity)}`,
    );
}

/** A node's degraded checks that all came before the incident: the alert is not about it. */
function earlierDegradedChecks(r: IncidentResult, data: DrillData): string[] {
  const out: string[] = [];
  const degradedAlerts = r.prometheus.filter((p) => p.alertname === "DegradedTokenChecks" && p.firingSeen);
  for (const p of degradedAlerts) {
    const node = nodeIdOf(data, p.labels.instance);
    const ev = r.degradedChecks?.find((d) => d.node === node);
    if (ev && ev.lastAt < r.start)
      out.push(
        `DegradedTokenChecks (${node}) is not this incident's: ${ev.count} degraded check${ev.count > 1 ? "s" : ""} at ${dur(ev.lastAt - r.start)}, before it began${ev.warningsAround ? "" : ", with no warning or error in the node's log within 5 s: nothing says why"}`,
      );
  }
  return out;
}

/**
 * Rules that went pending and never fired; slow burns (for: 30m) are left out, being meant to stay
 * quiet through an incident.
 */
function pendingNeverFired(r: IncidentResult): string[] {
  const flapped = r.prometheus.filter(
    (x) =>
      x.firingSeen === undefined && x.pendingSeen !== undefined && (RULE_FOR_S.get(x.alertname) ?? 0) < 600,
  );
  return [...new Set(flapped.map((x) => x.alertname))].map(
    (name) => `${name} (for: ${RULE_FOR.get(name)}) went pending, never fired`,
  );
}

/** `status` that said all was well during it, failed builds, and pages never resolved. */
function statusBuildsAndResolves(r: IncidentResult): string[] {
  const out: string[] = [];
  const during = r.status.filter((s) => s.when === "during");
  const told = (s: StatusSample) => s.summary.some((l) => l.trim() === "to know:");
  const okDuring = during.filter((s) => s.exit === 0);
  if (okDuring.length)
    out.push(
      `\`status\` exit 0 at ${okDuring.map((s) => `+${s.atS} s${told(s) ? " (with a notice)" : " (ok, nothing to know)"}`).join(", ")}`,
    );
  if (r.builds.failed) out.push(`${r.builds.failed} of ${r.builds.runs} builds failed`);
  const unresolved = r.pager.filter((n) => n.firingAt !== undefined && n.resolvedAt === undefined);
  for (const key of new Set(unresolved.map((n) => `${n.alertname} (${n.source})`)))
    out.push(`${key} never resolved at the pager`);
  return out;
}

/** The doc's section: what the drill is, the run, a table of the incidents, then each in detail. */
function markdown(data: DrillData): string {
  return [
    ...sectionIntro(data),
    ...incidentTable(data),
    "",
    "### Each incident in detail",
    "",
    ...data.incidents.flatMap((r) => incidentDetail(r, data)),
  ].join("\n");
}

/** The heading, how the drill is set up, the run's machine and versions, how to read times, the baseline. */
function sectionIntro(data: DrillData): string[] {
  const lines: string[] = [];
  const { meta: m, settings: set, baseline, totalMs: total } = data;
  lines.push("## The on-call drill");
  lines.push("");
  lines.push(
    "<!-- Generated by scripts/drill.ts (npm run drill): edits between here and the next heading are overwritten. -->",
  );
  lines.push("");
  lines.push(
    `Issue 29's drill, repeated by \`npm run drill\` (scripts/drill.ts): a local cluster of real processes (redis-server with an append-only file, 3 signing nodes, the monitor) under a continuous load of ${set.clients} build machines, each running \`signtool sign\` on ${set.filesPerBuild} files then pausing ${set.pauseMs / 1000} s (a failed run is a failed build); a real Prometheus evaluating the shipped \`prometheus/alerts.yml\` at the shipped ${m.intervals.scrape_interval} scrape and ${m.intervals.evaluation_interval} evaluation intervals (real \`for:\`); a real Alertmanager running the shipped \`prometheus/alertmanager.yml\` (group_wait ${m.alertmanagerRoute.group_wait}, group_interval ${m.alertmanagerRoute.group_interval} and ${m.alertmanagerRoute.page_group_interval} for pages, its inhibition) with only the receivers' URLs replaced by a local receiver that records when each notification arrives. The monitor sends its own alerts to that Alertmanager. Incidents follow each other with ${set.gapS} s between the end of one and the start of the next.`,
  );
  lines.push("");
  lines.push(
    `Run of ${m.date}, commit ${m.commit}, on ${m.machine.hostname} (${m.machine.cpus} × ${m.machine.cpuModel}, ${m.machine.memGiB} GiB; 1-minute load average during the run ${m.machine.load1.min.toFixed(1)}–${m.machine.load1.max.toFixed(1)}, median ${m.machine.load1.median.toFixed(1)}: the machine is shared with other work), ${m.versions.prometheus}, ${m.versions.alertmanager}, ${m.versions.redis}; ${dur(total)} in all. Raw results: \`bench/results/drill.json\` (git-ignored).`,
  );
  lines.push("");
  lines.push(
    "Times: a page's delay is from the incident's start to the notification's arrival at the receiver; a resolve's, from the incident's end (Redis back, the process started again, the burst stopped). An alert belongs to the incident in whose window it started (Alertmanager's `startsAt`), even when it arrived during a later one. (monitor) and (Prometheus) say who raised it. `signing-admin status` is its exit code and the first lines of its verdict, run 5 s after the incident began. Reading the pages: Alertmanager (group_by alertname) notifies a new group group_wait after its first alert, and a group that already exists only at its group_interval ticks; an alert that fires and resolves between two notifications of its group is told to nobody. The monitor's pages carry a `service` label and take the first route, Prometheus' pages the second, so each source's pages have groups of their own (tickets share the default route's).",
  );
  lines.push("");
  lines.push(
    `Before the first incident: ${baseline.runs} builds, ${baseline.failed} failed, median ${secs(baseline.medianMs)}, slowest ${secs(baseline.slowestMs)}.`,
  );
  lines.push("");
  return lines;
}

/**
 * The summary table, a row per incident: its builds, pages, tickets, `signing-admin status` at +5 s
 * and what on-call would still miss.
 */
function incidentTable(data: DrillData): string[] {
  const lines: string[] = [];
  lines.push(
    "| incident | builds in its window: runs, failed (median, slowest) | pages | tickets | `signing-admin status` at +5 s | what on-call would still miss |",
  );
  lines.push("|---|---|---|---|---|---|");
  for (const r of data.incidents) {
    const b = r.builds;
    const buildCell = `${b.runs} runs, **${b.failed} failed** (${secs(b.medianMs)}, ${secs(b.slowestMs)})${b.errors.length ? `: ${b.errors.map((e) => `\`${e.replace(/\|/g, "\\|").slice(0, 120)}\``).join("; ")}` : ""}`;
    lines.push(
      `| ${r.title} | ${buildCell} | ${pagerCell(r, "page")} | ${pagerCell(r, "ticket")} | ${statusCell(r.status.find((s) => s.atS <= 10))} | ${missed(r, data).join("<br>") || "-"} |`,
    );
  }
  return lines;
}

/** One incident in detail: Prometheus, the nodes' logs, the monitor, builds, inhibitions, status samples. */
function incidentDetail(r: IncidentResult, data: DrillData): string[] {
  const lines: string[] = [];
  const { settings: set, t0 } = data;
  lines.push(
    `**${r.title}** (at ${dur(r.start - t0)} into the run${r.durationMs ? `, for ${dur(r.end - r.start)}` : ""})`,
  );
  lines.push("");
  const prom = r.prometheus
    .map(
      (p) =>
        `${p.alertname}${describeLabels(data, p.labels)}: pending +${dur(Date.parse(p.activeAt) - r.start)}, ${
          p.firingSeen !== undefined ? `firing seen +${dur(p.firingSeen - r.start)}` : "never fired"
        }${p.goneSeen !== undefined ? `, gone +${dur(p.goneSeen - r.start)}` : ""}`,
    )
    .join("; ");
  lines.push(
    `- Prometheus (polled every ${(set.pollMs ?? POLL_MS) / 1000} s): ${prom || "no alert pending or firing"}.`,
  );
  const ev = (r.degradedChecks ?? [])
    .map((d) => `${d.node} ${d.count} (${dur(d.firstAt - r.start)} to ${dur(d.lastAt - r.start)})`)
    .join(", ");
  if (r.degradedChecks)
    lines.push(
      `- Token checks accepted without Redis (\`tokenCheck: degraded\` in the node logs, from ${EVIDENCE_BEFORE_MS / 1000} s before it began to the next incident; times from its start): ${ev || "none"}.`,
    );
  const mon = r.monitorAlerts
    .map(
      (a) =>
        `${a.alertname} fired +${dur(a.firedAt - r.start)}${a.resolvedAt !== undefined ? `, resolved +${dur(a.resolvedAt - r.start)}` : ""}${a.delivered ? "" : " (never reached the pager)"}`,
    )
    .join("; ");
  lines.push(`- The monitor (its log): ${mon || "raised no alert"}.`);
  const b = r.builds;
  lines.push(
    `- Builds from its start to the next incident's: ${b.runs}, ${b.failed} failed, median ${secs(b.medianMs)}, slowest ${secs(b.slowestMs)}; the machine's 1-minute load average ${r.load1.min.toFixed(1)}–${r.load1.max.toFixed(1)}.`,
  );
  const inhibited = r.alertmanager.filter((a) => a.inhibitedBy.length);
  if (inhibited.length)
    lines.push(
      `- Alertmanager inhibited: ${[...new Set(inhibited.map((a) => `${a.alertname} (${a.source})`))].join(", ")}.`,
    );
  for (const s of r.status) lines.push(statusDetail(s, r));
  if (r.extra)
    lines.push(
      `- ${Object.entries(r.extra)
        .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
        .join("; ")}`,
    );
  lines.push("");
  return lines;
}

/** One `signing-admin status` sample: when, its exit code and the first lines of its verdict. */
function statusDetail(s: StatusSample, r: IncidentResult): string {
  return `- \`signing-admin status\` at +${s.atS} s (${s.when}${s.when === "after" ? `, ${dur(s.atS * 1000 - (r.end - r.start))} after the end` : ""}): exit ${s.exit}; ${s.summary
    .slice(0, 6)
    .map((l) => `\`${l.trim().slice(0, 200)}\``)
    .join(" ")}${s.summary.length > 6 ? ` (+${s.summary.length - 6} lines)` : ""}`;
}

/** Replaces (or appends) the drill's section of docs/operations.md. */
function writeDoc(section: string): void {
  const file = join(root, "docs/operations.md");
  const intro = [
    "# Operations",
    "",
    "Running signing-cluster: the processes, what pages whom, and what the on-call engineer sees.",
    "The runbooks (`runbooks/`) say what to do for each alert; this file says what the alerts and",
    "`signing-admin status` tell, measured.",
    "",
  ].join("\n");
  const text = existsSync(file) ? readFileSync(file, "utf8") : `${intro}\n`;
  const at = text.indexOf("## The on-call drill");
  let out: string;
  if (at < 0) out = `${text.replace(/\n*$/, "\n\n")}${section}\n`;
  else {
    const next = text.indexOf("\n## ", at + 1);
    out = `${text.slice(0, at)}${section}\n${next < 0 ? "" : text.slice(next)}`;
  }
  writeFileSync(file, out);
}

function versionLine(program: string): string {
  const r = spawnSync(program, ["--version"], { encoding: "utf8" });
  return `${r.stdout}${r.stderr}`.split("\n")[0]?.trim() ?? program;
}

function commit(): string {
  const rev = spawnSync("git", ["rev-parse", "--short", "HEAD"], {
    cwd: root,
    encoding: "utf8",
  }).stdout.trim();
  const dirty = spawnSync("git", ["status", "--porcelain", "--untracked-files=no"], {
    cwd: root,
    encoding: "utf8",
  }).stdout.trim();
  return `${rev || "unknown"}${dirty ? " (with uncommitted changes)" : ""}`;
}

// ---------------------------------------------------------------------------------------------

/** The incidents DRILL_ONLY names, or all of them. */
function selectIncidents(): Incident[] {
  const only = process.env.DRILL_ONLY?.split(",").filter(Boolean);
  const incidents = only ? INCIDENTS.filter((i) => only.includes(i.id)) : INCIDENTS;
  if (!incidents.length)
    throw new Error(`DRILL_ONLY names no incident of ${INCIDENTS.map((i) => i.id).join(", ")}`);
  return incidents;
}

interface TimelineEntry {
  incident: Incident;
  start: number;
  end: number;
  status: Promise<StatusSample>[];
  extra?: Record<string, unknown>;
}

/** Injects one incident, samples `signing-admin status` during and after it, and recovers it. */
async function runIncident(c: Cluster, incident: Incident): Promise<TimelineEntry> {
  log(`INCIDENT ${incident.id}: ${incident.title}`);
  const start = Date.now();
  await incident.inject(c);
  const entry: TimelineEntry = { incident, start, end: start, status: [] };
  // An event (durationMs 0) has no "after": its aftermath is the incident.
  let endedAt: number | undefined;
  for (const s of STATUS_AT_S)
    entry.status.push(
      sleep(Math.max(0, start + s * 1000 - Date.now())).then(() =>
        adminStatus(c.clusterFile, start, endedAt),
      ),
    );
  if (incident.durationMs > 0) {
    await sleep(Math.max(0, start + incident.durationMs - Date.now()));
    await incident.recover(c);
    endedAt = Date.now();
    log(`INCIDENT ${incident.id} over (${dur(endedAt - start)})`);
  }
  entry.end = endedAt ?? Date.now();
  if (endedAt !== undefined)
    entry.status.push(
      sleep(STATUS_AFTER_END_S * 1000).then(() => adminStatus(c.clusterFile, start, entry.end)),
    );
  if (incident.id === "forged-tokens")
    entry.extra = {
      forgedRequests: forgedSent,
      forgedStatuses,
      perSecond: +(forgedSent / ((entry.end - start) / 1000)).toFixed(1),
    };
  return entry;
}

/** After the last incident: until every page that arrived has resolved and nothing is active, or the cap. */
async function waitForQuiet(c: Cluster, watcher: Watcher): Promise<void> {
  const tailEnd = Date.now() + TAIL_MAX_S * 1000;
  await sleep(Math.min(GAP_S, TAIL_MAX_S) * 1000 * 0.5);
  while (Date.now() < tailEnd) {
    const open = readPager(c.pagerLog).filter((n) => n.firingAt !== undefined && n.resolvedAt === undefined);
    if (!open.length && watcher.promActive === 0 && watcher.amActive === 0) break;
    await sleep(POLL_MS);
  }
}

/** Each incident's evidence: builds, load, status samples, pages, alerts, all in its window. */
async function collectResults(
  timeline: TimelineEntry[],
  load: BuildLoad,
  watcher: Watcher,
  c: Cluster,
  dir: string,
  drillEnd: number,
): Promise<IncidentResult[]> {
  const samples = await Promise.all(
    timeline.map(async (t) => (await Promise.all(t.status)).sort((a, b) => a.atS - b.atS)),
  );
  const pager = readPager(c.pagerLog);
  const monitorAlerts = readMonitorAlerts(join(dir, "monitor.log"));
  return timeline.map((t, k) => {
    const windowEnd = timeline[k + 1]?.start ?? drillEnd;
    const w = { start: t.start, windowEnd };
    const r: IncidentResult = {
      id: t.incident.id,
      title: t.incident.title,
      durationMs: t.incident.durationMs,
      start: t.start,
      end: t.end,
      windowEnd,
      builds: buildsIn(load.builds, t.start, windowEnd),
      load1: loadSummary(watcher.load.filter((l) => l.at >= t.start && l.at < windowEnd).map((l) => l.load1)),
      status: samples[k] ?? [],
      pager: pager.filter((n) => inWindow(Date.parse(n.startsAt), w)),
      prometheus: [...watcher.prom.values()].filter((p) => inWindow(Date.parse(p.activeAt), w)),
      alertmanager: [...watcher.am.values()].filter((a) => inWindow(Date.parse(a.startsAt), w)),
      monitorAlerts: monitorAlerts
        .filter((a) => inWindow(a.firedAt, w))
        .map((a) => ({ ...a, delivered: deliveredFromMonitor(a, pager) })),
    };
    if (t.extra) r.extra = t.extra;
    return r;
  });
}

/** When, which commit, on what machine, with which versions and the shipped intervals. */
function drillMeta(watcher: Watcher): DrillData["meta"] {
  const shippedGlobal = (
    parse(readFileSync(join(root, "prometheus/prometheus.yml"), "utf8")) as { global: Record<string, string> }
  ).global;
  const amRoute = (
    parse(readFileSync(join(root, "prometheus/alertmanager.yml"), "utf8")) as {
      route: Record<string, unknown> & { routes?: { matchers?: string[]; group_interval?: string }[] };
    }
  ).route;
  const pageRoute = amRoute.routes?.find((r) => r.matchers?.includes('severity="page"'));
  const cpu = cpus();
  return {
    date: `${new Date(T0).toISOString().slice(0, 16).replace("T", " ")} UTC`,
    commit: commit(),
    machine: {
      hostname: hostname(),
      cpus: cpu.length,
      cpuModel: cpu[0]?.model.trim() ?? "?",
      memGiB: Math.round(totalmem() / 2 ** 30),
      load1: loadSummary(watcher.load.map((l) => l.load1)),
    },
    versions: {
      node: process.version,
      prometheus: `Prometheus ${/version (\S+)/.exec(versionLine("prometheus"))?.[1] ?? "?"}`,
      alertmanager: `Alertmanager ${/version (\S+)/.exec(versionLine(findAlertmanager() ?? "prometheus-alertmanager"))?.[1] ?? "?"}`,
      redis: `Redis ${/v=(\S+)/.exec(versionLine("redis-server"))?.[1] ?? "?"}`,
    },
    intervals: shippedGlobal,
    alertmanagerRoute: {
      group_wait: amRoute.group_wait,
      group_interval: amRoute.group_interval,
      page_group_interval: pageRoute?.group_interval ?? amRoute.group_interval,
      repeat_interval: amRoute.repeat_interval,
    },
  };
}

async function stopCluster(c: Cluster, dir: string): Promise<void> {
  await c.prometheus.stop();
  await Promise.all(c.nodes.map((n) => n.stop()));
  await c.monitor.stop();
  await c.alertmanager.stop();
  await c.receiver.close();
  await c.redis.stop();
  if (KEEP) log(`state kept in ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const incidents = selectIncidents();
  const dir = mkdtempSync(join(tmpdir(), "signing-drill-"));
  log(
    `drill: ${incidents.map((i) => i.id).join(", ")}; at most ~${dur(estimatedSeconds(incidents) * 1000)} after start-up; state in ${dir}`,
  );
  const c = await startCluster(dir);
  log(
    `cluster up: redis ${c.redis.url}, nodes ${c.nodes.map((n) => n.url).join(" ")}, monitor ${c.monitor.url}, alertmanager ${c.alertmanager.url}, prometheus ${c.prometheus.url}`,
  );
  const watcher = new Watcher(c.prometheus.url, c.alertmanager.url);
  const load = await BuildLoad.start(
    join(dir, "load"),
    c.nodes.map((n) => n.url),
    c.issuer,
    c.gpgPublicKey,
  );
  log(`${CLIENTS} build machines signing; ${BASELINE_S} s of baseline`);
  const loadStarted = Date.now();
  await sleep(BASELINE_S * 1000);

  const timeline = await runIncidents(c, incidents, watcher);
  const drillEnd = Date.now();
  await load.stop();
  await watcher.stop();

  const results = await collectResults(timeline, load, watcher, c, dir, drillEnd);
  const data = drillData(c, watcher, load, results, {
    loadStarted,
    firstStart: timeline[0]?.start ?? drillEnd,
    drillEnd,
    dir,
  });
  addNodeEvidence(data, dir);
  const writeDocs = process.env.DRILL_DOC
    ? process.env.DRILL_DOC === "1"
    : incidents.length === INCIDENTS.length;
  report(data, writeDocs);
  await stopCluster(c, dir);
  log(`done in ${dur(Date.now() - T0)}; bench/results/drill.json`);
}

/** The longest the drill can take once the cluster is up: baseline, incidents, gaps and the tail's cap. */
function estimatedSeconds(incidents: Incident[]): number {
  return (
    BASELINE_S +
    incidents.reduce((s, i) => s + i.durationMs / 1000, 0) +
    GAP_S * (incidents.length - 1) +
    TAIL_MAX_S
  );
}

/** The incidents one after another, GAP_S apart; after the last, until all is quiet (or the tail's cap). */
async function runIncidents(c: Cluster, incidents: Incident[], watcher: Watcher): Promise<TimelineEntry[]> {
  const timeline: TimelineEntry[] = [];
  for (const [k, incident] of incidents.entries()) {
    timeline.push(await runIncident(c, incident));
    if (k < incidents.length - 1) await sleep(GAP_S * 1000);
    else await waitForQuiet(c, watcher);
  }
  return timeline;
}

/** The run's record: when and where, the settings, the baseline, each incident and the whole pager. */
function drillData(
  c: Cluster,
  watcher: Watcher,
  load: BuildLoad,
  results: IncidentResult[],
  times: { loadStarted: number; firstStart: number; drillEnd: number; dir: string },
): DrillData {
  const pager = readPager(c.pagerLog);
  const { loadStarted, firstStart, drillEnd, dir } = times;
  return {
    meta: drillMeta(watcher),
    settings: drillSettings(),
    t0: T0,
    totalMs: drillEnd - T0,
    baseline: buildsIn(load.builds, loadStarted, firstStart),
    beforeDrill: pager.filter((n) => Date.parse(n.startsAt) < firstStart - 1000),
    incidents: results,
    pager,
    builds: load.builds,
    nodes: c.nodes.map((n) => ({ id: n.opts.id, url: n.url })),
    ...(KEEP ? { stateDir: dir } : {}),
  };
}

/** The knobs this run used (DRILL_* or their defaults). */
function drillSettings(): DrillData["settings"] {
  return {
    clients: CLIENTS,
    filesPerBuild: FILES_PER_BUILD,
    pauseMs: PAUSE_MS,
    baselineS: BASELINE_S,
    gapS: GAP_S,
    tailMaxS: TAIL_MAX_S,
    forgers: FORGERS,
    statusAtS: STATUS_AT_S,
    pollMs: POLL_MS,
  };
}

const RESULTS_FILE = join(root, "bench/results/drill.json");

/** Prints the summary, writes bench/results/drill.json and, when asked, the doc's section. */
function report(data: DrillData, writeDocs: boolean): void {
  for (const r of data.incidents) {
    console.log(`\n== ${r.title}`);
    console.log(`builds: ${JSON.stringify(r.builds)}`);
    console.log(`pages:   ${pagerCell(r, "page").replace(/<br>/g, "\n         ")}`);
    console.log(`tickets: ${pagerCell(r, "ticket").replace(/<br>/g, "\n         ")}`);
    for (const s of r.status)
      console.log(`status +${s.atS} s (${s.when}): exit ${s.exit}\n    ${s.summary.join("\n    ")}`);
    console.log(`missed: ${missed(r, data).join("; ") || "-"}`);
  }
  if (data.beforeDrill.length)
    console.log(
      `\nalerts that began before the first incident: ${data.beforeDrill.map((n) => n.alertname).join(", ")}`,
    );
  mkdirSync(join(root, "bench/results"), { recursive: true });
  writeFileSync(RESULTS_FILE, `${JSON.stringify(data, null, 2)}\n`);
  if (writeDocs) {
    writeDoc(markdown(data));
    log("docs/operations.md: the on-call drill section rewritten");
  } else log("some incidents only: docs/operations.md left alone");
}

/**
 * `--render [FILE]`: the doc's section again from a run's results (bench/results/drill.json),
 * without running anything; node-log evidence is added when the run kept its state dir.
 */
function render(file: string): void {
  const data = JSON.parse(readFileSync(file, "utf8")) as DrillData;
  if (data.stateDir && existsSync(data.stateDir)) {
    if (!data.nodes) {
      const cluster = JSON.parse(readFileSync(join(data.stateDir, "cluster.json"), "utf8")) as {
        nodes: string[];
      };
      data.nodes = cluster.nodes.map((url, i) => ({ id: `local-${i}`, url }));
    }
    addNodeEvidence(data, data.stateDir);
  }
  report(data, data.incidents.length === INCIDENTS.length);
}

const renderAt = process.argv.indexOf("--render");
const entry = renderAt >= 0 ? async () => render(resolve(process.argv[renderAt + 1] ?? RESULTS_FILE)) : main;

entry().then(
  () => process.exit(0),
  (err) => {
    console.error(`drill failed: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);

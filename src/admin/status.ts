import { join } from "node:path";
import { readSnapshot } from "../recovery/snapshot.js";
import { parseEpoch } from "../store/epoch.js";
import { parseInfoServer } from "../store/redis-info.js";
import { globLiteral, scanKeys } from "../store/scan.js";
import type { Epoch } from "../tokens/orphans.js";
import { ago, duration, iso, section, table } from "./output.js";
import { connectRedis, redactUrl, type Target } from "./target.js";

const HTTP_TIMEOUT_MS = 3000;
const BREAKER_STATES = ["closed", "half-open", "open"] as const;

export interface NodeStatus {
  url: string;
  reachable: boolean;
  /** `ok`, `degraded`, `unavailable` from /readyz, or `unreachable`. */
  ready: string;
  httpStatus?: number;
  error?: string;
  /** Failed readiness checks, `name: detail`. */
  failedChecks: string[];
  version?: string;
  commit?: string;
  nodeId?: string;
  breakers: Record<string, string>;
  keys: { format: string; fingerprint: string }[];
}

export interface RedisStatus {
  url: string;
  reachable: boolean;
  error?: string;
  role?: string;
  runId?: string;
  uptimeSeconds?: number;
  epoch?: Epoch | null;
  liveTokens?: number;
  revocations?: number;
}

export interface MonitorStatus {
  url: string;
  reachable: boolean;
  status: string;
  error?: string;
  checks?: Record<string, { ok: boolean; detail: string }>;
  /** What the monitor saw lately and what it did, newest first (its /status). */
  events?: { kind: string; at: string; summary: string; description?: string }[];
  /** The alerts it has firing now. */
  firing?: { alert: string; severity: string; since: string; summary: string }[];
  /** Token checks across the nodes over the last minute and five, and InvalidTokenSpike's bar. */
  tokens?: {
    lastMinute: TokenWindow | null;
    last5Minutes: TokenWindow | null;
    spike: { ratio: number; minChecksPerSecond: number };
  };
}

export interface TokenWindow {
  seconds: number;
  checksPerSecond: number;
  rejectedPerSecond: number;
  ratio: number;
}

/** A root cause and what follows from it, so the cause is read first. */
export interface Finding {
  problem: string;
  consequences: string[];
}

export interface SnapshotStatus {
  source: "state-dir" | "monitor";
  file?: string;
  present: boolean;
  error?: string;
  takenAt?: number;
  ageSeconds?: number;
  tokens?: number;
  epochId?: string;
}

export interface StatusReport {
  ok: boolean;
  checkedAt: string;
  /** Every problem, root causes first, each followed by what it causes. */
  problems: string[];
  /** The same, grouped: each root cause with its consequences. */
  findings: Finding[];
  /** Not failures, but what an on-call engineer should know: a recent data loss, say. */
  notices: string[];
  nodes: NodeStatus[];
  redis: RedisStatus | null;
  monitor: MonitorStatus | null;
  snapshot: SnapshotStatus | null;
}

const reason = (err: unknown): string => {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError") return `no answer in ${HTTP_TIMEOUT_MS} ms`;
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
};

async function get(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  return { status: res.status, text: await res.text() };
}

/** Value of one sample `name{label="value"} 1` (or `name 1`) of a Prometheus text exposition. */
export function metricSamples(
  text: string,
  name: string,
): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

async function probeNode(url: string): Promise<NodeStatus> {
  const node: NodeStatus = {
    url,
    reachable: false,
    ready: "unreachable",
    failedChecks: [],
    breakers: {},
    keys: [],
  };
  const [ready, version, metrics, formats] = await Promise.allSettled([
    get(`${url}/readyz`),
    get(`${url}/__version__`),
    get(`${url}/metrics`),
    get(`${url}/formats`),
  ]);
  if (ready.status === "rejected") {
    node.error = reason(ready.reason);
    return node;
  }
  node.reachable = true;
  node.httpStatus = ready.value.status;
  try {
    const body = JSON.parse(ready.value.text) as {
      status?: string;
      checks?: Record<string, { ok?: boolean; detail?: string }>;
    };
    node.ready = body.status ?? `HTTP ${ready.value.status}`;
    for (const [name, c] of Object.entries(body.checks ?? {}))
      if (!c.ok) node.failedChecks.push(`${name}: ${c.detail ?? "failed"}`);
  } catch {
    node.ready = `HTTP ${ready.value.status}`;
    node.error = "/readyz did not answer JSON";
  }
  if (version.status === "fulfilled" && version.value.status === 200) {
    try {
      const v = JSON.parse(version.value.text) as { version?: string; commit?: string; node?: string };
      if (v.version) node.version = v.version;
      if (v.commit) node.commit = v.commit;
      if (v.node) node.nodeId = v.node;
    } catch {
      // shown as unknown
    }
  }
  if (metrics.status === "fulfilled" && metrics.value.status === 200) {
    for (const s of metricSamples(metrics.value.text, "signing_store_breaker_state")) {
      const name = s.labels.breaker;
      if (name) node.breakers[name] = BREAKER_STATES[s.value] ?? `unknown (${s.value})`;
    }
  }
  if (formats.status === "fulfilled" && formats.value.status === 200) {
    try {
      const f = JSON.parse(formats.value.text) as { formats?: { name: string; fingerprint?: string }[] };
      node.keys = (f.formats ?? []).map((x) => ({ format: x.name, fingerprint: x.fingerprint ?? "?" }));
    } catch {
      // shown as none
    }
  }
  return node;
}

async function probeRedis(target: Target): Promise<RedisStatus | null> {
  if (!target.redisUrl) return null;
  const status: RedisStatus = { url: redactUrl(target.redisUrl), reachable: false };
  let store: Awaited<ReturnType<typeof connectRedis>>;
  try {
    store = await connectRedis(target);
  } catch (err) {
    status.error = (err as Error).message;
    return status;
  }
  const { client, keys } = store;
  try {
    const [role, info, epoch] = await Promise.all([
      client.call("ROLE") as Promise<unknown[]>,
      client.info("server"),
      client.hgetall(keys.epoch()),
    ]);
    status.reachable = true;
    status.role = Array.isArray(role) ? String(role[0]) : "unknown";
    const server = parseInfoServer(info);
    status.runId = server.runId;
    status.uptimeSeconds = server.uptimeSeconds;
    status.epoch = parseEpoch(epoch) ?? null;
    const p = globLiteral(keys.prefix);
    const [tokens, revoked] = await Promise.all([
      scanKeys(client, `${p}token:*`),
      scanKeys(client, `${p}revoked:*`),
    ]);
    status.liveTokens = tokens.length;
    status.revocations = revoked.length;
  } catch (err) {
    status.error = (err as Error).message;
  } finally {
    client.disconnect();
  }
  return status;
}

async function probeMonitor(url: string): Promise<{ status: MonitorStatus; metrics?: string }> {
  const [ready, metrics, about] = await Promise.allSettled([
    get(`${url}/readyz`),
    get(`${url}/metrics`),
    get(`${url}/status`),
  ]);
  if (ready.status === "rejected")
    return { status: { url, reachable: false, status: "unreachable", error: reason(ready.reason) } };
  const status: MonitorStatus = { url, reachable: true, status: `HTTP ${ready.value.status}` };
  try {
    const body = JSON.parse(ready.value.text) as MonitorStatus;
    if (body.status) status.status = body.status;
    if (body.checks) status.checks = body.checks;
  } catch {
    status.error = "/readyz did not answer JSON";
  }
  if (about.status === "fulfilled" && about.value.status === 200) {
    try {
      const body = JSON.parse(about.value.text) as Pick<MonitorStatus, "events" | "firing" | "tokens">;
      if (body.events) status.events = body.events;
      if (body.firing) status.firing = body.firing;
      if (body.tokens) status.tokens = body.tokens;
    } catch {
      // an older monitor: no RECENT or ALERTS section
    }
  }
  return metrics.status === "fulfilled" && metrics.value.status === 200
    ? { status, metrics: metrics.value.text }
    : { status };
}

async function snapshotFromStateDir(dir: string): Promise<SnapshotStatus> {
  const file = join(dir, "snapshot.json");
  try {
    const snap = await readSnapshot(file);
    if (!snap) return { source: "state-dir", file, present: false, error: "no snapshot.json" };
    return {
      source: "state-dir",
      file,
      present: true,
      takenAt: snap.takenAt,
      ageSeconds: (Date.now() - snap.takenAt) / 1000,
      tokens: snap.tokens.length,
      epochId: snap.epochId,
    };
  } catch (err) {
    return { source: "state-dir", file, present: false, error: (err as Error).message };
  }
}

/** Without the state dir: the monitor's metrics, and its /readyz to tell "none yet" from "just written". */
function snapshotFromMonitor(text: string, monitor: MonitorStatus): SnapshotStatus {
  const age = metricSamples(text, "signing_monitor_snapshot_age_seconds")[0]?.value;
  const tokens = metricSamples(text, "signing_monitor_snapshot_tokens")[0]?.value;
  const check = monitor.checks?.snapshot;
  const s: SnapshotStatus = { source: "monitor", present: age !== undefined && check?.ok !== false };
  if (!s.present) s.error = check?.detail ?? "the monitor exports no snapshot age";
  if (age !== undefined) s.ageSeconds = age;
  if (tokens !== undefined) s.tokens = tokens;
  return s;
}

interface Parts {
  nodes: NodeStatus[];
  redis: RedisStatus | null;
  monitor: MonitorStatus | undefined;
  snapshot: SnapshotStatus | null;
}

/** How recent a data loss or restart must be to be told about even when all is well. */
const NOTICE_WINDOW_MS = 15 * 60_000;

/**
 * Root causes first, each with what follows from it: a Redis that is down explains degraded
 * nodes and open breakers, so those are listed under it rather than before it.
 */
function diagnose(
  parts: Parts,
  opts: { snapshotMaxAgeSeconds: number },
): { findings: Finding[]; notices: string[] } {
  const findings: Finding[] = [];
  const redisDown = redisFinding(parts.redis);
  const nodeProblems = parts.nodes.flatMap(nodeProblemsOf);
  const fromRedis = nodeProblems.filter((p) => p.becauseOfRedis).map((p) => p.text);
  if (redisDown) findings.push({ problem: redisDown, consequences: fromRedis });
  for (const p of nodeProblems)
    if (!redisDown || !p.becauseOfRedis) findings.push({ problem: p.text, consequences: [] });
  if (!parts.nodes.length)
    findings.push(lone("no signing node given (--node URL or nodes in the cluster file)"));
  if (differentKeys(parts.nodes))
    findings.push(lone("nodes sign with different keys (see KEYS): check their key files"));
  findings.push(...monitorFindings(parts.monitor), ...snapshotFindings(parts, opts));
  return { findings, notices: notices(parts) };
}

const lone = (problem: string): Finding => ({ problem, consequences: [] });

function redisFinding(redis: RedisStatus | null): string | undefined {
  if (!redis) return "no Redis given (--redis URL or redisUrl in the cluster file)";
  if (!redis.reachable || redis.error) return redis.error ?? `Redis ${redis.url} is unreachable`;
  if (redis.role !== "master") return `Redis ${redis.url} is a ${redis.role}, not the master`;
  return undefined;
}

function nodeProblemsOf(n: NodeStatus): { text: string; becauseOfRedis: boolean }[] {
  if (!n.reachable) return [{ text: `node ${n.url} is unreachable: ${n.error}`, becauseOfRedis: false }];
  const out: { text: string; becauseOfRedis: boolean }[] = [];
  if (n.ready !== "ok") {
    const why = n.failedChecks.length ? ` (${n.failedChecks.join("; ")})` : "";
    out.push({
      text: `node ${n.url} is ${n.ready}${why}`,
      becauseOfRedis: n.failedChecks.every((c) => c.startsWith("redis:")) && n.failedChecks.length > 0,
    });
  }
  const open = Object.entries(n.breakers).filter(([, state]) => state !== "closed");
  if (open.length)
    out.push({
      text: `node ${n.url}: ${open.map(([b, st]) => `breaker ${b} is ${st}`).join(", ")}`,
      becauseOfRedis: true,
    });
  return out;
}

function differentKeys(nodes: NodeStatus[]): boolean {
  const sets = nodes
    .filter((n) => n.keys.length)
    .map((n) => n.keys.map((k) => `${k.format}=${k.fingerprint}`).join(","));
  return new Set(sets).size > 1;
}

function monitorFindings(m: MonitorStatus | undefined): Finding[] {
  if (!m) return [];
  if (m.status !== "ok")
    return [
      lone(
        `monitor ${m.url} is ${m.status}${m.error ? `: ${m.error}` : ""}: no restart detection, re-seed or alerts meanwhile`,
      ),
    ];
  const out = (m.firing ?? []).map((a) =>
    lone(`alert ${a.alert} (${a.severity}) firing since ${a.since}: ${a.summary}`),
  );
  const t = m.tokens;
  const minute = t?.lastMinute;
  if (t && minute && minute.ratio > t.spike.ratio && minute.checksPerSecond > t.spike.minChecksPerSecond)
    out.push(
      lone(
        `${pct(minute.ratio)} of token checks were rejected over the last minute (${minute.rejectedPerSecond.toFixed(1)}/s; InvalidTokenSpike's bar is ${pct(t.spike.ratio)}): see runbooks/InvalidTokenSpike.md`,
      ),
    );
  return out;
}

const pct = (x: number) => `${(x * 100).toFixed(0)} %`;

function snapshotFindings({ snapshot, redis }: Parts, opts: { snapshotMaxAgeSeconds: number }): Finding[] {
  if (!snapshot) return [];
  const out: Finding[] = [];
  if (!snapshot.present)
    out.push(
      lone(`no usable snapshot${snapshot.file ? ` at ${snapshot.file}` : ""}: ${snapshot.error ?? "none"}`),
    );
  else if ((snapshot.ageSeconds ?? 0) > opts.snapshotMaxAgeSeconds)
    out.push(
      lone(
        `snapshot is ${duration(snapshot.ageSeconds ?? 0)} old (limit ${opts.snapshotMaxAgeSeconds}s): tokens issued since would be lost with Redis`,
      ),
    );
  const epoch = redis?.epoch;
  if (epoch && snapshot.epochId && snapshot.epochId !== epoch.id && epoch.state === "fresh")
    out.push(
      lone(
        `Redis lost its data (snapshot epoch ${snapshot.epochId}, now ${epoch.id}) and nobody re-seeded or invalidated yet: see \`signing-admin reseed --help\``,
      ),
    );
  return out;
}

/** A data loss or restart of the last minutes, and what the monitor did, even when all is well. */
function notices({ redis, monitor }: Parts): string[] {
  const now = Date.now();
  const out: string[] = [];
  for (const e of monitor?.events ?? []) {
    if (now - Date.parse(e.at) > NOTICE_WINDOW_MS) continue;
    out.push(`${e.at} (${ago(Date.parse(e.at))}) ${e.kind}: ${e.description ?? e.summary}`);
  }
  if (!monitor?.events && redis?.uptimeSeconds !== undefined && redis.uptimeSeconds * 1000 < NOTICE_WINDOW_MS)
    out.push(`Redis restarted ${duration(redis.uptimeSeconds)} ago (no monitor to say what it found)`);
  return out;
}

/** Asks every part of the cluster how it is; never throws for an unreachable part. */
export async function gatherStatus(
  target: Target,
  opts: { snapshotMaxAgeSeconds: number },
): Promise<StatusReport> {
  const [nodes, redis, monitor, fromDir] = await Promise.all([
    Promise.all(target.nodes.map(probeNode)),
    probeRedis(target),
    target.monitor ? probeMonitor(target.monitor) : Promise.resolve(undefined),
    target.stateDir ? snapshotFromStateDir(target.stateDir) : Promise.resolve(undefined),
  ]);
  const snapshot =
    fromDir ?? (monitor?.metrics ? snapshotFromMonitor(monitor.metrics, monitor.status) : null);

  const { findings, notices } = diagnose({ nodes, redis, monitor: monitor?.status, snapshot }, opts);
  const problems = findings.flatMap((f) => [f.problem, ...f.consequences.map((c) => `  ${c}`)]);
  return {
    ok: findings.length === 0,
    checkedAt: new Date().toISOString(),
    problems,
    findings,
    notices,
    nodes,
    redis,
    monitor: monitor?.status ?? null,
    snapshot,
  };
}

/** The report as on-call reads it: one section per part of the cluster, the verdict last. */
export function renderStatus(r: StatusReport): string {
  const out: string[] = [];
  if (r.nodes.length) out.push(nodesTable(r.nodes));
  if (r.redis) out.push(section("REDIS", redisFields(r.redis)));
  if (r.monitor) out.push(section("MONITOR", monitorFields(r.monitor)));
  if (r.snapshot) out.push(section("SNAPSHOT", snapshotFields(r.snapshot)));
  const about = r.monitor ? monitorSections(r.monitor) : [];
  out.push(...about, summary(r));
  return `${out.join("\n\n")}\n`;
}

function nodesTable(nodes: StatusReport["nodes"]): string {
  const breakers = (b: Record<string, string>) =>
    Object.keys(b).length
      ? Object.entries(b)
          .map(([name, state]) => `${name}=${state}`)
          .join(" ")
      : "-";
  return table(
    ["NODE", "READY", "VERSION", "NODE ID", "BREAKERS", "KEYS"],
    nodes.map((n) => [
      n.url,
      n.ready,
      n.version ?? "-",
      n.nodeId ?? "-",
      breakers(n.breakers),
      n.keys.length ? n.keys.map((k) => `${k.format} ${k.fingerprint}`).join(", ") : "-",
    ]),
  );
}

function redisFields(x: NonNullable<StatusReport["redis"]>): [string, string][] {
  const fields: [string, string][] = [["url", x.url]];
  if (!x.reachable) return [...fields, ["state", `unreachable: ${x.error ?? "?"}`]];
  const e = x.epoch;
  fields.push(
    ["role", x.role ?? "-"],
    ["run_id", x.runId ?? "-"],
    ["uptime", x.uptimeSeconds === undefined ? "-" : duration(x.uptimeSeconds)],
    [
      "epoch",
      e
        ? `${e.id} ${e.state}, created ${iso(e.createdAt)}${e.minIat ? `, minIat ${iso(e.minIat)}` : ""}`
        : "none (empty Redis: the next node request creates a fresh one)",
    ],
    [
      "tokens",
      x.liveTokens === undefined ? "-" : `${x.liveTokens} live, ${x.revocations ?? 0} revocation markers`,
    ],
  );
  if (x.error) fields.push(["error", x.error]);
  return fields;
}

function monitorFields(m: MonitorStatus): [string, string][] {
  const fields: [string, string][] = [
    ["url", m.url],
    ["ready", m.reachable ? m.status : `unreachable: ${m.error ?? "?"}`],
  ];
  for (const [name, c] of Object.entries(m.checks ?? {}))
    fields.push([name, `${c.ok ? "ok" : "FAILED"}: ${c.detail}`]);
  return fields;
}

function snapshotFields(s: NonNullable<StatusReport["snapshot"]>): [string, string][] {
  const fields: [string, string][] = [
    ["source", s.file ?? "monitor metric signing_monitor_snapshot_age_seconds"],
  ];
  if (!s.present) return [...fields, ["state", s.error ?? "none"]];
  const age = s.takenAt !== undefined ? `${ago(s.takenAt)} (${iso(s.takenAt)})` : duration(s.ageSeconds ?? 0);
  fields.push(["age", age], ["tokens", String(s.tokens ?? "-")]);
  if (s.epochId) fields.push(["epoch", s.epochId]);
  return fields;
}

/** RECENT, ALERTS and TOKENS, from the monitor's /status. */
function monitorSections(m: MonitorStatus): string[] {
  const out: string[] = [];
  const events = (m.events ?? []).slice(0, 5);
  if (events.length)
    out.push(
      section(
        "RECENT (the monitor, newest first)",
        events.map((e): [string, string] => [
          ago(Date.parse(e.at)),
          `${e.kind}: ${e.description ?? e.summary}`,
        ]),
      ),
    );
  if (m.firing)
    out.push(
      section(
        "ALERTS (the monitor's, firing now)",
        m.firing.length
          ? m.firing.map((a): [string, string] => [a.alert, `${a.severity}, since ${a.since}: ${a.summary}`])
          : [["none", ""]],
      ),
    );
  const t = m.tokens;
  if (t) {
    const line = (w: TokenWindow | null) =>
      w
        ? `${pct(w.ratio)} rejected (${w.rejectedPerSecond.toFixed(1)} of ${w.checksPerSecond.toFixed(1)} checks/s)`
        : "no scrape yet";
    out.push(
      section("TOKEN CHECKS (all nodes)", [
        ["last minute", line(t.lastMinute)],
        ["last 5 minutes", line(t.last5Minutes)],
      ]),
    );
  }
  return out;
}

/** The verdict: root causes first, each with what follows from it, then what to know. */
function summary(r: StatusReport): string {
  const lines = r.ok
    ? ["status: ok"]
    : [`status: ${r.findings.length} problem${r.findings.length === 1 ? "" : "s"}`];
  for (const f of r.findings) {
    lines.push(`  - ${f.problem}`);
    for (const c of f.consequences) lines.push(`      which causes: ${c}`);
  }
  if (r.notices.length) lines.push("  to know:", ...r.notices.map((n) => `  * ${n}`));
  return lines.join("\n");
}

import { join } from "node:path";
import { parseInfoServer } from "../../monitor/detect.js";
import { readSnapshot } from "../recovery/snapshot.js";
import { parseEpoch } from "../store/epoch.js";
import type { Epoch } from "../tokens/orphans.js";
import { ago, duration, iso, section, table } from "./output.js";
import { connectRedis, globEscape, redactUrl, scanKeys, type Target } from "./target.js";

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
  problems: string[];
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
    const p = globEscape(keys.prefix);
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
  const [ready, metrics] = await Promise.allSettled([get(`${url}/readyz`), get(`${url}/metrics`)]);
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

  const problems: string[] = [];
  if (!nodes.length) problems.push("no signing node given (--node URL or nodes in the cluster file)");
  for (const n of nodes) {
    if (!n.reachable) problems.push(`node ${n.url} is unreachable: ${n.error}`);
    else if (n.ready !== "ok")
      problems.push(
        `node ${n.url} is ${n.ready}${n.failedChecks.length ? ` (${n.failedChecks.join("; ")})` : ""}`,
      );
    for (const [b, s] of Object.entries(n.breakers))
      if (s !== "closed") problems.push(`node ${n.url}: breaker ${b} is ${s}`);
  }
  const fingerprints = new Set(
    nodes
      .filter((n) => n.keys.length)
      .map((n) => n.keys.map((k) => `${k.format}=${k.fingerprint}`).join(",")),
  );
  if (fingerprints.size > 1)
    problems.push("nodes sign with different keys (see KEYS): check their key files");
  if (!redis) problems.push("no Redis given (--redis URL or redisUrl in the cluster file)");
  else if (!redis.reachable || redis.error) problems.push(redis.error ?? `Redis ${redis.url} is unreachable`);
  else if (redis.role !== "master") problems.push(`Redis ${redis.url} is a ${redis.role}, not the master`);
  if (monitor && monitor.status.status !== "ok")
    problems.push(
      `monitor ${monitor.status.url} is ${monitor.status.status}${monitor.status.error ? `: ${monitor.status.error}` : ""}`,
    );
  if (snapshot) {
    if (!snapshot.present)
      problems.push(
        `no usable snapshot${snapshot.file ? ` at ${snapshot.file}` : ""}: ${snapshot.error ?? "none"}`,
      );
    else if ((snapshot.ageSeconds ?? 0) > opts.snapshotMaxAgeSeconds)
      problems.push(
        `snapshot is ${duration(snapshot.ageSeconds ?? 0)} old (limit ${opts.snapshotMaxAgeSeconds}s): tokens issued since would be lost with Redis`,
      );
    const epoch = redis?.epoch;
    if (epoch && snapshot.epochId && snapshot.epochId !== epoch.id && epoch.state === "fresh")
      problems.push(
        `Redis lost its data (snapshot epoch ${snapshot.epochId}, now ${epoch.id}) and nobody re-seeded or invalidated yet: see \`signing-admin reseed --help\``,
      );
  }
  return {
    ok: problems.length === 0,
    checkedAt: new Date().toISOString(),
    problems,
    nodes,
    redis,
    monitor: monitor?.status ?? null,
    snapshot,
  };
}

export function renderStatus(r: StatusReport): string {
  const out: string[] = [];
  if (r.nodes.length) {
    out.push(
      table(
        ["NODE", "READY", "VERSION", "NODE ID", "BREAKERS", "KEYS"],
        r.nodes.map((n) => [
          n.url,
          n.ready,
          n.version ?? "-",
          n.nodeId ?? "-",
          Object.keys(n.breakers).length
            ? Object.entries(n.breakers)
                .map(([b, s]) => `${b}=${s}`)
                .join(" ")
            : "-",
          n.keys.length ? n.keys.map((k) => `${k.format} ${k.fingerprint}`).join(", ") : "-",
        ]),
      ),
    );
  }
  if (r.redis) {
    const x = r.redis;
    const fields: [string, string][] = [["url", x.url]];
    if (!x.reachable) fields.push(["state", `unreachable: ${x.error ?? "?"}`]);
    else {
      fields.push(["role", x.role ?? "-"], ["run_id", x.runId ?? "-"]);
      fields.push(["uptime", x.uptimeSeconds === undefined ? "-" : duration(x.uptimeSeconds)]);
      const e = x.epoch;
      fields.push([
        "epoch",
        e
          ? `${e.id} ${e.state}, created ${iso(e.createdAt)}${e.minIat ? `, minIat ${iso(e.minIat)}` : ""}`
          : "none (empty Redis: the next node request creates a fresh one)",
      ]);
      fields.push([
        "tokens",
        x.liveTokens === undefined ? "-" : `${x.liveTokens} live, ${x.revocations ?? 0} revocation markers`,
      ]);
      if (x.error) fields.push(["error", x.error]);
    }
    out.push(section("REDIS", fields));
  }
  if (r.monitor) {
    const m = r.monitor;
    const fields: [string, string][] = [
      ["url", m.url],
      ["ready", m.reachable ? m.status : `unreachable: ${m.error ?? "?"}`],
    ];
    for (const [name, c] of Object.entries(m.checks ?? {}))
      fields.push([name, `${c.ok ? "ok" : "FAILED"}: ${c.detail}`]);
    out.push(section("MONITOR", fields));
  }
  if (r.snapshot) {
    const s = r.snapshot;
    const fields: [string, string][] = [
      ["source", s.file ?? "monitor metric signing_monitor_snapshot_age_seconds"],
    ];
    if (!s.present) fields.push(["state", s.error ?? "none"]);
    else {
      fields.push([
        "age",
        s.takenAt !== undefined ? `${ago(s.takenAt)} (${iso(s.takenAt)})` : duration(s.ageSeconds ?? 0),
      ]);
      fields.push(["tokens", String(s.tokens ?? "-")]);
      if (s.epochId) fields.push(["epoch", s.epochId]);
    }
    out.push(section("SNAPSHOT", fields));
  }
  out.push(
    r.ok
      ? "status: ok"
      : [
          `status: ${r.problems.length} problem${r.problems.length === 1 ? "" : "s"}`,
          ...r.problems.map((p) => `  - ${p}`),
        ].join("\n"),
  );
  return `${out.join("\n\n")}\n`;
}

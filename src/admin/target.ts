import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { z } from "zod";
import type { Config } from "../config/schema.js";
import { redisSchema } from "../config/schema.js";
import { SigningClusterError } from "../errors.js";
import { ReplicaAckTimeoutError } from "../store/errors.js";
import { StoreKeys } from "../store/keys.js";
import { createRedisClient, type RedisClient, waitForReady } from "../store/redis.js";
import { awaitReplica } from "../store/replicas.js";

/**
 * A signing-admin command that could not be done (ADMIN_FAILED: one line, exit 1), or a
 * mistake on its command line (USAGE: one line, exit 2, like commander's own errors).
 */
export class AdminError extends SigningClusterError<"ADMIN_FAILED" | "USAGE"> {
  constructor(message: string, code: "ADMIN_FAILED" | "USAGE" = "ADMIN_FAILED") {
    super(code, message);
  }
}

/** A mistake on the command line. */
export const usageError = (message: string) => new AdminError(message, "USAGE");

/** The global options as commander hands them over (merged over the command chain). */
export interface GlobalOptions {
  cluster?: string;
  redis?: string;
  node?: string[];
  monitor?: string;
  prefix?: string;
  stateDir?: string;
  json?: boolean;
}

/** Where the cluster is: everything a subcommand needs to reach it. */
export interface Target {
  /** The cluster file used, if any. */
  clusterFile?: string;
  /** A display name for Redis: its URL (password masked), or the Sentinel master. */
  redisUrl?: string;
  /** Sentinel Redis, from the cluster file's `redis` object (node config shape). */
  redis?: Config["redis"];
  nodes: string[];
  monitor?: string;
  prefix: string;
  /** The monitor's state dir (holds snapshot.json). */
  stateDir?: string;
  /** A token issuer of the nodes (cluster file `issuer`): `keys test` signs through the nodes as it. */
  issuer?: { user: string; passwordFile?: string };
  json: boolean;
}

export const DEFAULT_PREFIX = "signing:";
export const CLUSTER_ENV = "SIGNING_ADMIN_CLUSTER";
/** Redis password for deployments that need one; secrets never go on the command line. */
export const REDIS_PASSWORD_ENV = "SIGNING_ADMIN_REDIS_PASSWORD";

/** `cluster.json` as `npm start` writes it (DESIGN.md §10); extra fields are ignored. */
const clusterFileSchema = z.looseObject({
  redisUrl: z.string().min(1).optional(),
  nodes: z.array(z.string().min(1)).optional(),
  monitor: z.string().min(1).nullable().optional(),
  /** Optional extras an operator may add: key prefix and the monitor's state dir. */
  prefix: z.string().min(1).optional(),
  monitorStateDir: z.string().min(1).optional(),
  /** Sentinel deployments: the `redis` object of the nodes' configuration. */
  redis: redisSchema.optional(),
  /** The issuer `keys test` gets its probe token as (npm start writes its dev issuer). */
  issuer: z.object({ user: z.string().min(1), passwordFile: z.string().min(1).optional() }).optional(),
});

const trimSlash = (url: string) => url.trim().replace(/\/+$/, "");

function readClusterFile(file: string): z.infer<typeof clusterFileSchema> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new AdminError(
      `cannot read cluster file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new AdminError(`cluster file ${file} is not JSON`);
  }
  const parsed = clusterFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AdminError(
      `cluster file ${file}: ${issue?.path.join(".") || "top level"}: ${issue?.message ?? "unexpected content"}`,
    );
  }
  return parsed.data;
}

/**
 * Resolves where the cluster is: `--cluster FILE`, else `$SIGNING_ADMIN_CLUSTER`, else
 * `.local/cluster.json` if it exists; then `--redis`, `--node`, `--monitor` override it.
 */
export function resolveTarget(
  o: GlobalOptions,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): Target {
  const explicit = o.cluster ?? (env[CLUSTER_ENV] || undefined);
  const fallback = resolve(cwd, ".local", "cluster.json");
  const clusterFile = explicit ? resolve(cwd, explicit) : existsSync(fallback) ? fallback : undefined;
  const file = clusterFile ? readClusterFile(clusterFile) : {};
  const nodes = (o.node?.length ? o.node : (file.nodes ?? [])).map(trimSlash).filter(Boolean);
  const monitor = o.monitor ?? file.monitor ?? undefined;
  const stateDir = o.stateDir ?? file.monitorStateDir;
  const target: Target = {
    nodes,
    prefix: o.prefix ?? file.prefix ?? DEFAULT_PREFIX,
    json: Boolean(o.json),
  };
  if (clusterFile) target.clusterFile = clusterFile;
  const redisUrl = o.redis ?? file.redisUrl ?? file.redis?.url;
  if (redisUrl) target.redisUrl = redisUrl;
  else if (file.redis) {
    target.redis = file.redis;
    target.redisUrl = `sentinel://${(file.redis.sentinels ?? []).map((s) => `${s.host}:${s.port}`).join(",")}/${file.redis.name}`;
  }
  if (monitor) target.monitor = trimSlash(monitor);
  if (stateDir) target.stateDir = resolve(cwd, stateDir);
  if (file.issuer)
    target.issuer = {
      user: file.issuer.user,
      ...(file.issuer.passwordFile ? { passwordFile: resolve(cwd, file.issuer.passwordFile) } : {}),
    };
  return target;
}

/** `<state-dir>/snapshot.json`, or undefined without a state dir. */
export function defaultSnapshotFile(target: Target): string | undefined {
  return target.stateDir ? join(target.stateDir, "snapshot.json") : undefined;
}

/** A Redis URL fit for messages: the password, if any, is masked. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString().replace(/\/$/, "");
  } catch {
    return url;
  }
}

export function requireRedisUrl(target: Target): string {
  if (target.redisUrl) return target.redisUrl;
  throw usageError(
    `no Redis given: use --redis URL or --cluster FILE (or set ${CLUSTER_ENV}, or run where .local/cluster.json exists)`,
  );
}

export interface Store {
  client: RedisClient;
  keys: StoreKeys;
  url: string;
}

/** Connects to Redis (bounded: 2 s), or explains which Redis could not be reached and why. */
export async function connectRedis(target: Target): Promise<Store> {
  const url = requireRedisUrl(target);
  let client: RedisClient;
  try {
    client = createRedisClient({
      redis: target.redis ? { ...target.redis, connectTimeoutMs: 2000 } : { url, connectTimeoutMs: 2000 },
      commandTimeoutMs: 2000,
      password: process.env[REDIS_PASSWORD_ENV] || undefined,
    });
  } catch (err) {
    throw new AdminError(`cannot use Redis URL ${redactUrl(url)}: ${(err as Error).message}`);
  }
  let lastError: Error | undefined;
  client.on("error", (err: Error) => {
    lastError = err;
  });
  try {
    await waitForReady(client, 2500);
  } catch (err) {
    client.disconnect();
    const reason = lastError?.message || (err as Error).message;
    throw new AdminError(`cannot reach Redis at ${redactUrl(url)}: ${reason}`);
  }
  return { client, keys: new StoreKeys(target.prefix), url };
}

/** Runs `fn` with a connected Redis and always disconnects, so the process can exit. */
export async function withRedis<T>(target: Target, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await connectRedis(target);
  try {
    return await fn(store);
  } finally {
    store.client.disconnect();
  }
}

/** How long an admin write waits for a replica to confirm it (under the 2 s command timeout). */
const REPLICA_ACK_MS = 1500;

/**
 * Waits for a replica to have this connection's writes, as the nodes do before answering a
 * revocation; a write no replica confirmed is reported as not done (the operator runs it again).
 */
export async function durably(client: RedisClient, what: string): Promise<"replicated" | "no_replicas"> {
  try {
    return await awaitReplica(client, what, REPLICA_ACK_MS);
  } catch (err) {
    if (!(err instanceof ReplicaAckTimeoutError)) throw err;
    throw new AdminError(
      `${what}: written on the Redis primary, but no replica confirmed it within ${REPLICA_ACK_MS} ms, so a failover now could lose it: check the replicas (INFO replication), then run the command again`,
    );
  }
}

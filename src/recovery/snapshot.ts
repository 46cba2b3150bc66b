import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { SigningClusterError } from "../errors.js";
import { writeFileAtomic } from "../files/write-atomic.js";
import type { StoreKeys } from "../store/keys.js";
import type { RedisClient } from "../store/redis.js";
import { globLiteral, idOfKey, scanKeys } from "../store/scan.js";

/**
 * What the monitor keeps to put tokens back after Redis lost its data: every live token
 * record, revocation marker and nonce chain, with the absolute time each expires.
 */
const snapshotBody = z
  .object({
    format: z.literal("signing-snapshot/1"),
    takenAt: z.number().int(),
    epochId: z.string().min(1),
    /** The epoch's minIat when taken (ms, 0 = unset): an invalidation outlives a later data loss. */
    minIat: z.number().int().min(0).optional(),
    tokens: z.array(
      z.object({ id: z.string().min(1), value: z.string(), expiresAt: z.number().int() }).strict(),
    ),
    revoked: z.array(
      z.object({ id: z.string().min(1), reason: z.string(), expiresAt: z.number().int() }).strict(),
    ),
    nonces: z.array(
      z
        .object({
          id: z.string().min(1),
          /** The chain's hash fields (token-records.ts): counter, lineage, step, previous. */
          n: z.number().int().min(0),
          l: z.string().optional(),
          c: z.string().optional(),
          p: z.string().optional(),
          d: z.string(),
          r: z.string(),
          expiresAt: z.number().int(),
        })
        .strict(),
    ),
  })
  .strict();

export type Snapshot = z.infer<typeof snapshotBody>;

export class SnapshotCorruptError extends SigningClusterError<"SNAPSHOT_CORRUPT"> {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super("SNAPSHOT_CORRUPT", `snapshot ${file} is unusable: ${reason}`);
  }
}

const checksum = (body: string) => createHash("sha256").update(body).digest("hex");

/**
 * The token, revocation and nonce keys, in one SCAN pass. SCAN walks the whole keyspace
 * whatever MATCH says, and results and jobs outnumber tokens by far (one of each per signed
 * file, kept for `signing.resultTtl`): three passes, one per kind, cost Redis three times as
 * much. One pattern covers the three kinds (token, revoked, nonce) and, like theirs, fails
 * within the first characters after the prefix for every other key (result, job, sha1, epoch):
 * a pattern that looks for the `{<id>}` hash tag would have Redis read every key to its end.
 */
async function scanTokenKeys(client: RedisClient, keys: StoreKeys) {
  const p = keys.prefix;
  const found = { tokens: [] as string[], revoked: [] as string[], nonces: [] as string[] };
  for (const key of await scanKeys(client, `${globLiteral(p)}[nrt][eo][knv]*`)) {
    const kind = key.slice(p.length, key.indexOf(":{", p.length));
    if (kind === "token") found.tokens.push(key);
    else if (kind === "revoked") found.revoked.push(key);
    else if (kind === "nonce") found.nonces.push(key);
  }
  return found;
}

/** Reads every live token, revocation and nonce with SCAN (never KEYS) and pipelined reads. */
export async function takeSnapshot(
  client: RedisClient,
  keys: StoreKeys,
  epochId: string,
  minIat = 0,
): Promise<Snapshot> {
  const takenAt = Date.now();
  const found = await scanTokenKeys(client, keys);
  const snap: Snapshot = {
    format: "signing-snapshot/1",
    takenAt,
    epochId,
    ...(minIat ? { minIat } : {}),
    tokens: [],
    revoked: [],
    nonces: [],
  };
  const reader = new ExpiringReads(client, takenAt);
  for (const [k, value, expiresAt] of await reader.read(found.tokens, (pipe, k) => pipe.get(k))) {
    snap.tokens.push({ id: idOfKey(k), value: value as string, expiresAt });
  }
  for (const [k, reason, expiresAt] of await reader.read(found.revoked, (pipe, k) => pipe.get(k))) {
    snap.revoked.push({ id: idOfKey(k), reason: reason as string, expiresAt });
  }
  for (const [k, hash, expiresAt] of await reader.read(found.nonces, (pipe, k) => pipe.hgetall(k))) {
    const chain = nonceEntry(idOfKey(k), hash as Record<string, string>, expiresAt);
    if (chain) snap.nonces.push(chain);
  }
  return snap;
}

type Pipeline = ReturnType<RedisClient["pipeline"]>;

/** Reads keys with their remaining lifetimes, pipelined in chunks. */
class ExpiringReads {
  constructor(
    private readonly client: RedisClient,
    private readonly takenAt: number,
  ) {}

  /** [key, value, expiresAt] of each key still there with a TTL (gone since SCAN, or not ours: skipped). */
  async read(
    list: string[],
    cmd: (pipe: Pipeline, key: string) => void,
  ): Promise<[string, unknown, number][]> {
    const out: [string, unknown, number][] = [];
    for (let i = 0; i < list.length; i += 500) {
      const chunk = list.slice(i, i + 500);
      const pipe = this.client.pipeline();
      for (const key of chunk) {
        cmd(pipe, key);
        pipe.pttl(key);
      }
      const replies = (await pipe.exec()) ?? [];
      chunk.forEach((key, j) => {
        const [err1, value] = replies[2 * j] ?? [];
        const [err2, pttl] = replies[2 * j + 1] ?? [];
        const expiresAt = typeof pttl === "number" && pttl > 0 ? this.takenAt + pttl : undefined;
        if (!err1 && !err2 && value !== null && expiresAt !== undefined) out.push([key, value, expiresAt]);
      });
    }
    return out;
  }
}

/** A nonce chain as the snapshot keeps it; undefined for a hash that is not a chain we wrote. */
function nonceEntry(
  id: string,
  h: Record<string, string>,
  expiresAt: number,
): Snapshot["nonces"][number] | undefined {
  if (h.n === undefined || !/^[0-9]{1,15}$/.test(h.n)) return undefined;
  const { l, c, p } = h;
  return {
    id,
    n: Number(h.n),
    ...(l !== undefined ? { l } : {}),
    ...(c !== undefined ? { c } : {}),
    ...(p !== undefined ? { p } : {}),
    d: h.d ?? "",
    r: h.r ?? "0",
    expiresAt,
  };
}

/** Writes the snapshot so that a reader sees the old file or the new one (temp, fsync, rename). */
export async function writeSnapshot(file: string, snap: Snapshot): Promise<void> {
  const body = JSON.stringify(snap);
  await writeFileAtomic(file, `${JSON.stringify({ checksum: checksum(body), snapshot: snap })}\n`, 0o600, {
    durable: true,
  });
}

/** Reads and checks a snapshot; undefined when there is none yet. */
export async function readSnapshot(file: string): Promise<Snapshot | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new SnapshotCorruptError(file, `cannot read it (${(err as NodeJS.ErrnoException).code})`);
  }
  let outer: { checksum?: unknown; snapshot?: unknown };
  try {
    outer = JSON.parse(text) as typeof outer;
  } catch {
    throw new SnapshotCorruptError(file, "not JSON (truncated or overwritten?)");
  }
  // JSON.parse keeps the written key order, so this re-serialises the exact bytes summed.
  if (outer?.checksum !== checksum(JSON.stringify(outer?.snapshot))) {
    throw new SnapshotCorruptError(file, "checksum does not match its content");
  }
  const parsed = snapshotBody.safeParse(outer.snapshot);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SnapshotCorruptError(
      file,
      `unexpected content at ${issue?.path.join(".") || "top level"}: ${issue?.message}`,
    );
  }
  return parsed.data;
}

import { existsSync } from "node:fs";
import { reseed } from "../recovery/restore.js";
import { readSnapshot, type Snapshot, takeSnapshot, writeSnapshot } from "../recovery/snapshot.js";
import { type Epoch, type EpochChange, ensureEpoch, readEpoch, setEpochState } from "../store/epoch.js";
import { ago, iso, section } from "./output.js";
import { AdminError, durably, type Store, usageError } from "./target.js";

/** What each epoch state means for a token that is missing from Redis (DESIGN.md §4). */
export const STATE_MEANING: Record<Epoch["state"], string> = {
  fresh:
    "nobody has acted since this epoch began: tokens of older epochs missing from Redis get 503 STORE_RECOVERING for store.recoveryGraceMs, then the nodes' store.orphanPolicy decides",
  restored:
    "the tokens of the previous epoch were re-seeded from a snapshot: tokens of older epochs still missing (issued after the snapshot) heal on first use",
  invalidated:
    "tokens of older epochs missing from Redis, and any missing token issued before minIat, get 401 TOKEN_INVALIDATED: build masters must fetch new tokens",
};

const epochJson = (e: Epoch) => ({
  id: e.id,
  state: e.state,
  createdAt: iso(e.createdAt),
  minIat: e.minIat ? iso(e.minIat) : null,
  meaning: STATE_MEANING[e.state],
});

/**
 * Changes the epoch only if it is still the one the operator decided about (compare-and-set on
 * its id), and only reports it done once a replica has it.
 */
async function changeEpoch({ client, keys }: Store, change: EpochChange, what: string): Promise<void> {
  if (!(await setEpochState(client, keys, change)))
    throw new AdminError(
      `${what}: the epoch changed while this ran (Redis lost its data again, or the record was replaced): nothing was written; look at \`signing-admin epoch\` and run the command again`,
    );
  await durably(client, what);
}

export interface EpochShow {
  epoch: ReturnType<typeof epochJson> | null;
}

export async function showEpoch(store: Store): Promise<EpochShow> {
  const e = await readEpoch(store.client, store.keys);
  return { epoch: e ? epochJson(e) : null };
}

export function renderEpoch(r: EpochShow, prefix: string): string {
  const e = r.epoch;
  if (!e)
    return `no epoch record (${prefix}epoch): Redis is new or empty; the first node request creates a fresh one\n`;
  const fields: [string, string][] = [
    ["id", e.id],
    ["state", e.state],
    ["created", `${e.createdAt} (${ago(Date.parse(e.createdAt))})`],
    ["minIat", e.minIat ? `${e.minIat}: missing tokens issued before it are invalidated` : "unset"],
  ];
  const legend = (Object.keys(STATE_MEANING) as Epoch["state"][]).map(
    (s) => `${s === e.state ? "*" : " "} ${s.padEnd(11)} ${STATE_MEANING[s]}`,
  );
  return `${section(`EPOCH (${prefix}epoch)`, fields)}\n\nwhat the states mean for a token missing from Redis (* = now):\n${legend.join("\n")}\n`;
}

/** `now`, or an ISO date/time, to epoch milliseconds. */
export function parseTime(s: string, now = Date.now()): number {
  if (s.trim().toLowerCase() === "now") return now;
  const ms = Date.parse(s);
  if (!/^\d{4}-\d{2}-\d{2}/.test(s.trim()) || !Number.isFinite(ms))
    throw usageError(`--before takes an ISO date/time (2024-05-01T12:00:00Z) or "now", not "${s}"`);
  if (ms > now + 60_000) throw usageError(`--before ${s} is in the future`);
  return ms;
}

export interface InvalidateResult {
  epochId: string;
  before: { state: Epoch["state"]; minIat: string | null };
  after: { state: "invalidated"; minIat: string };
}

/**
 * An operator decision overrides the monitor's: sets the current epoch `invalidated` with
 * `minIat` (compare-and-set on its id, confirmed by a replica). Every node refuses a token
 * issued before minIat from then on, present in Redis or not, with 401 TOKEN_INVALIDATED
 * (revocation markers stay: revoked stays revoked).
 */
export async function invalidate(store: Store, beforeMs: number): Promise<InvalidateResult> {
  const epoch = await ensureEpoch(store.client, store.keys);
  await changeEpoch(store, { id: epoch.id, state: "invalidated", minIatMs: beforeMs }, "invalidate");
  return {
    epochId: epoch.id,
    before: { state: epoch.state, minIat: epoch.minIat ? iso(epoch.minIat) : null },
    after: { state: "invalidated", minIat: iso(beforeMs) },
  };
}

export function renderInvalidate(r: InvalidateResult): string {
  const lines = [
    `epoch ${r.epochId} invalidated`,
    `  state   ${r.before.state} → ${r.after.state}`,
    `  minIat  ${r.before.minIat ?? "unset"} → ${r.after.minIat}`,
    `every token issued before ${r.after.minIat} now gets 401 TOKEN_INVALIDATED, whether Redis still holds it or lost it; build masters must fetch new ones.`,
  ];
  return `${lines.join("\n")}\n`;
}

export interface ReseedReport {
  file: string;
  snapshot: { epochId: string; takenAt: string; tokens: number; revoked: number; nonces: number };
  restored: { tokens: number; revoked: number; nonces: number; skippedExpired: number };
  epoch: { id: string; before: Epoch["state"]; after: Epoch["state"]; changed: boolean };
}

/** Loads a snapshot for reseed; a missing or corrupt file is the operator's to fix. */
export async function loadSnapshot(file: string): Promise<Snapshot> {
  let snap: Snapshot | undefined;
  try {
    snap = await readSnapshot(file);
  } catch (err) {
    throw new AdminError((err as Error).message);
  }
  if (!snap) throw new AdminError(`no snapshot at ${file}`);
  return snap;
}

/**
 * Puts a snapshot back (monitor/restore.ts reseed) and marks the current epoch restored.
 * Refuses when the epoch is invalidated (someone decided against the old tokens) or when the
 * snapshot is of the current epoch (nothing was lost), unless forced.
 */
export async function reseedFrom(store: Store, file: string, force: boolean): Promise<ReseedReport> {
  const snap = await loadSnapshot(file);
  const { client, keys } = store;
  const epoch = await ensureEpoch(client, keys);
  if (epoch.state === "invalidated" && !force)
    throw new AdminError(
      `epoch ${epoch.id} is invalidated${epoch.minIat ? ` (minIat ${iso(epoch.minIat)})` : ""}: someone decided the lost tokens must not come back; re-seed anyway with --force (marks the epoch restored and clears minIat)`,
    );
  if (snap.epochId === epoch.id && !force)
    throw new AdminError(
      `snapshot ${file} is of the current epoch ${epoch.id}: Redis has not lost its data since, nothing to re-seed (--force re-seeds anyway)`,
    );
  const restored = await reseed(client, keys, snap);
  let after: Epoch["state"] = epoch.state;
  if (epoch.state === "fresh") {
    // An earlier invalidation (the snapshot's minIat) stays in force in the new epoch.
    const settled = { id: epoch.id, state: "restored", onlyIfFresh: true } as const;
    await setEpochState(client, keys, snap.minIat ? { ...settled, minIatMs: snap.minIat } : settled);
    after = (await ensureEpoch(client, keys)).state;
  } else if (epoch.state === "invalidated") {
    await changeEpoch(store, { id: epoch.id, state: "restored", minIatMs: 0 }, "reseed --force");
    after = "restored";
  }
  return {
    file,
    snapshot: {
      epochId: snap.epochId,
      takenAt: iso(snap.takenAt),
      tokens: snap.tokens.length,
      revoked: snap.revoked.length,
      nonces: snap.nonces.length,
    },
    restored,
    epoch: { id: epoch.id, before: epoch.state, after, changed: after !== epoch.state },
  };
}

export function renderReseed(r: ReseedReport): string {
  const s = r.snapshot;
  const x = r.restored;
  return `${[
    `re-seeded from ${r.file} (epoch ${s.epochId}, taken ${s.takenAt}, ${ago(Date.parse(s.takenAt))})`,
    `  tokens       ${x.tokens} of ${s.tokens}`,
    `  revocations  ${x.revoked} of ${s.revoked}`,
    `  nonce chains ${x.nonces} of ${s.nonces}`,
    `  expired, skipped ${x.skippedExpired}`,
    r.epoch.changed
      ? `epoch ${r.epoch.id}: ${r.epoch.before} → ${r.epoch.after}`
      : `epoch ${r.epoch.id}: already ${r.epoch.after} (someone acted first), left as is`,
  ].join("\n")}\n`;
}

export interface SnapshotReport {
  file: string;
  epochId: string;
  takenAt: string;
  tokens: number;
  revoked: number;
  nonces: number;
}

/**
 * Writes a snapshot like the monitor does (atomic, 0600). Like the monitor, it will not
 * overwrite the snapshot of tokens Redis lost with one of the emptied Redis, unless forced.
 */
export async function snapshotTo(store: Store, file: string, force: boolean): Promise<SnapshotReport> {
  const { client, keys } = store;
  const epoch = await ensureEpoch(client, keys);
  if (!force && existsSync(file)) {
    const old = await readSnapshot(file).catch(() => undefined);
    if (old && old.epochId !== epoch.id && epoch.state === "fresh")
      throw new AdminError(
        `${file} holds the snapshot of epoch ${old.epochId}, which Redis lost (now ${epoch.id}, not yet re-seeded): overwriting it would throw those tokens away; run reseed first, write elsewhere with --out, or use --force`,
      );
  }
  const snap = await takeSnapshot(client, keys, epoch.id, epoch.minIat);
  if ((await ensureEpoch(client, keys)).id !== epoch.id)
    throw new AdminError("Redis lost its data while the snapshot was taken: not written");
  try {
    await writeSnapshot(file, snap);
  } catch (err) {
    throw new AdminError(
      `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  return {
    file,
    epochId: snap.epochId,
    takenAt: iso(snap.takenAt),
    tokens: snap.tokens.length,
    revoked: snap.revoked.length,
    nonces: snap.nonces.length,
  };
}

export function renderSnapshot(r: SnapshotReport): string {
  return `snapshot of epoch ${r.epochId} written to ${r.file}: ${r.tokens} tokens, ${r.revoked} revocations, ${r.nonces} nonce chains\n`;
}

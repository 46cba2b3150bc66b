import { randomBytes } from "node:crypto";
import { StoreCorruptError } from "./errors.js";
import type { StoreKeys } from "./keys.js";
import type { RedisClient } from "./redis.js";
import { LuaScript } from "./script.js";

/** The store epoch record, `signing:epoch` (DESIGN.md §4). Times are milliseconds. */
export interface Epoch {
  id: string;
  createdAt: number;
  state: "fresh" | "restored" | "invalidated";
  /** Tokens issued before this (ms) are refused; 0 when unset. */
  minIat: number;
}

const STATES: readonly string[] = ["fresh", "restored", "invalidated"];
const EPOCH_ID = /^[A-Za-z0-9_-]{1,64}$/;
const MILLIS = /^[0-9]{1,16}$/;

/** The record as Redis holds it, or undefined when any field is not one we write. */
export function parseEpoch(fields: Record<string, string>): Epoch | undefined {
  const { id, createdAt, state, minIat = "0" } = fields;
  if (!id || !EPOCH_ID.test(id) || !createdAt || !MILLIS.test(createdAt) || !MILLIS.test(minIat))
    return undefined;
  if (state === undefined || !STATES.includes(state)) return undefined;
  return { id, createdAt: Number(createdAt), state: state as Epoch["state"], minIat: Number(minIat) };
}

// Create-if-absent and read in one step, so two nodes finding it missing agree on one epoch.
// With ARGV[3] = 'repair' (the monitor), a record that is not a valid epoch is replaced by a
// fresh one, which the monitor then handles as a data loss. The validity rules are
// parseEpoch's; a record that passes here but not there is still refused by parseEpoch.
const ENSURE_EPOCH = new LuaScript(
  "signingEnsureEpoch",
  1,
  `
local function millis(v) return v and #v <= 16 and string.match(v, '^%d+$') end
local function valid()
  if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return false end
  local f = redis.call('HMGET', KEYS[1], 'id', 'createdAt', 'state', 'minIat')
  if not f[1] or not string.match(f[1], '^[%w_-]+$') or #f[1] > 64 then return false end
  if not millis(f[2]) or (f[4] and not millis(f[4])) then return false end
  return f[3] == 'fresh' or f[3] == 'restored' or f[3] == 'invalidated'
end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[3] == 'repair' and not valid() then
  redis.call('DEL', KEYS[1])
  exists = false
end
if not exists then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], 'state', 'fresh', 'minIat', '0')
end
return redis.call('HGETALL', KEYS[1])
`,
);

// Compare-and-set on the epoch id (and, for the monitor, on the state being fresh): a write
// meant for one epoch never lands on the next one, and two deciders cannot both act.
const SET_EPOCH_STATE = new LuaScript(
  "signingSetEpochState",
  1,
  `
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
if ARGV[4] == 'fresh' and redis.call('HGET', KEYS[1], 'state') ~= 'fresh' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'minIat', ARGV[3]) end
return 1
`,
);

function pairsToRecord(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(reply))
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  return out;
}

async function runEnsure(client: RedisClient, keys: StoreKeys, nowMs: number, mode: string): Promise<Epoch> {
  const args = [randomBytes(8).toString("hex"), nowMs, mode];
  const epoch = parseEpoch(pairsToRecord(await ENSURE_EPOCH.run(client, [keys.epoch()], args)));
  if (!epoch)
    throw new StoreCorruptError(keys.epoch(), "the epoch record has no valid id, createdAt or state");
  return epoch;
}

/**
 * Returns the current epoch, creating a fresh one when the store has none (new or emptied
 * Redis). A record that is not a valid epoch is StoreCorruptError: nodes fail closed on it.
 */
export function ensureEpoch(client: RedisClient, keys: StoreKeys, nowMs = Date.now()): Promise<Epoch> {
  return runEnsure(client, keys, nowMs, "ensure");
}

/** The monitor's ensureEpoch: a corrupt record is replaced by a fresh epoch (a data loss). */
export function ensureOrRepairEpoch(
  client: RedisClient,
  keys: StoreKeys,
  nowMs = Date.now(),
): Promise<Epoch> {
  return runEnsure(client, keys, nowMs, "repair");
}

/** The epoch as it is, without creating one: undefined when absent or not a valid record. */
export async function readEpoch(client: RedisClient, keys: StoreKeys): Promise<Epoch | undefined> {
  return parseEpoch(await client.hgetall(keys.epoch()));
}

export interface EpochChange {
  /** The epoch this decision is about: nothing is written once the epoch has changed. */
  id: string;
  state: Epoch["state"];
  minIatMs?: number;
  /** Only while nobody has decided yet (the monitor); an operator's decision overrides. */
  onlyIfFresh?: boolean;
}

/** Sets the epoch's state if it is still epoch `change.id`; false when it is not (or decided). */
export async function setEpochState(
  client: RedisClient,
  keys: StoreKeys,
  change: EpochChange,
): Promise<boolean> {
  const args = [change.id, change.state, change.minIatMs ?? "", change.onlyIfFresh ? "fresh" : ""];
  return (await SET_EPOCH_STATE.run(client, [keys.epoch()], args)) === 1;
}

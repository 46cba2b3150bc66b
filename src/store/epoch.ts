import { randomBytes } from "node:crypto";
import type { Epoch } from "../tokens/orphans.js";
import type { StoreKeys } from "./keys.js";
import type { RedisClient } from "./redis.js";
import { LuaScript } from "./script.js";

// Create-if-absent and read in one step, so two nodes finding it missing agree on one epoch.
const ENSURE_EPOCH = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], 'state', 'fresh', 'minIat', '0')
end
return redis.call('HGETALL', KEYS[1])
`);

export function parseEpoch(fields: Record<string, string>): Epoch | undefined {
  const { id, createdAt, state, minIat } = fields;
  if (!id || !createdAt) return undefined;
  return {
    id,
    createdAt: Number(createdAt),
    state: state === "restored" || state === "invalidated" ? state : "fresh",
    minIat: Number(minIat ?? 0) || 0,
  };
}

function pairsToRecord(reply: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(reply))
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  return out;
}

/** Returns the current epoch, creating a fresh one when the store has none (new or emptied Redis). */
export async function ensureEpoch(client: RedisClient, keys: StoreKeys, nowMs = Date.now()): Promise<Epoch> {
  const reply = await ENSURE_EPOCH.run(client, [keys.epoch()], [randomBytes(8).toString("hex"), nowMs]);
  const epoch = parseEpoch(pairsToRecord(reply));
  if (!epoch) throw new Error("signing epoch record is corrupt");
  return epoch;
}

/** Used by the monitor and the admin CLI to mark an epoch restored or invalidated. */
export async function setEpochState(
  client: RedisClient,
  keys: StoreKeys,
  state: Epoch["state"],
  minIatMs?: number,
): Promise<void> {
  const fields: Record<string, string> = { state };
  if (minIatMs !== undefined) fields.minIat = String(minIatMs);
  await client.hset(keys.epoch(), fields);
}

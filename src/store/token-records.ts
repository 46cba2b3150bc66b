import type { TokenClaims } from "../tokens/codec.js";
import type { StoreKeys } from "./keys.js";
import type { RedisClient } from "./redis.js";
import { LuaScript } from "./script.js";

/** What Redis says about a token in one round trip: revocation, presence and the nonce chain. */
export type StoredTokenState =
  | { state: "ok"; nextNonce?: number }
  | { state: "revoked" }
  | { state: "missing" }
  | { state: "nonce_mismatch" };

/*
 * KEYS: token, revoked, nonce. ARGV: mode ("check" | "sign"), presented nonce counter,
 * sha256 of the upload, token expiry (ms).
 * The chain advances by compare-and-set: the presented counter must be at least the stored
 * one (a counter ahead of the store means the store lost or restored an older chain; the
 * nonce's MAC was checked before). The previous counter is accepted again for the same
 * digest, so answers lost in transit (however many) do not strand the client; replaying
 * the same file gains an attacker nothing but a cache hit.
 */
const CHECK_TOKEN = new LuaScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return {'revoked'} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[1] ~= 'sign' then return {'ok'} end
local presented = tonumber(ARGV[2])
local rec = redis.call('HMGET', KEYS[3], 'n', 'd', 'r')
local expected = tonumber(rec[1]) or 0
if presented >= expected then
  redis.call('HSET', KEYS[3], 'n', presented + 1, 'd', ARGV[3], 'r', '0')
  redis.call('PEXPIREAT', KEYS[3], ARGV[4])
  return {'ok', presented + 1}
end
if presented == expected - 1 and rec[2] == ARGV[3] then
  return {'ok', expected}
end
return {'nonce_mismatch'}
`);

export interface TokenRecord {
  claims: TokenClaims;
  node: string;
  healed?: boolean;
}

export class TokenRecords {
  constructor(
    private readonly client: RedisClient,
    private readonly keys: StoreKeys,
  ) {}

  async save(record: TokenRecord): Promise<void> {
    await this.client.set(
      this.keys.token(record.claims.id),
      JSON.stringify(record),
      "PXAT",
      record.claims.exp * 1000,
    );
  }

  /** Re-inserts a token lost with the store (self-heal); keeps a copy that is already there. */
  async heal(record: TokenRecord): Promise<void> {
    const value = JSON.stringify({ ...record, healed: true });
    await this.client.set(this.keys.token(record.claims.id), value, "PXAT", record.claims.exp * 1000, "NX");
  }

  async check(claims: TokenClaims, nonce?: { counter: number; sha256: string }): Promise<StoredTokenState> {
    const id = claims.id;
    const reply = (await CHECK_TOKEN.run(
      this.client,
      [this.keys.token(id), this.keys.revoked(id), this.keys.nonce(id)],
      [nonce ? "sign" : "check", nonce?.counter ?? 0, nonce?.sha256 ?? "", claims.exp * 1000],
    )) as [string, number?];
    const [state, next] = reply;
    if (state === "ok") return next === undefined ? { state } : { state, nextNonce: Number(next) };
    if (state === "revoked" || state === "missing" || state === "nonce_mismatch") return { state };
    throw new Error(`unexpected token script reply ${String(state)}`);
  }

  /** Revocation outlives the token record and the nonce chain: a marker until the token's expiry. */
  async revoke(claims: TokenClaims, reason: string): Promise<void> {
    const id = claims.id;
    const at = claims.exp * 1000;
    await Promise.all([
      this.client.set(this.keys.revoked(id), reason, "PXAT", at),
      this.client.del(this.keys.token(id)),
      this.client.del(this.keys.nonce(id)),
    ]);
  }
}

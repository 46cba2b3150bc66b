import type { RedisClient } from "./redis.js";

/** `s` matched literally inside a Redis glob pattern (a prefix may contain `*`, `?`, `[`). */
export function globLiteral(s: string): string {
  return s.replace(/[*?[\]\\]/g, "\\$&");
}

/** Every key matching `pattern`, with SCAN (never KEYS: it would block Redis on a big keyspace). */
export async function scanKeys(client: RedisClient, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = (await client.scan(cursor, "MATCH", pattern, "COUNT", 1000)) as [string, string[]];
    cursor = next;
    found.push(...batch);
  } while (cursor !== "0");
  return found;
}

/** The token id inside a key of the form `<prefix>token:{<id>}` (and revoked, nonce). */
export function idOfKey(key: string): string {
  return key.slice(key.indexOf("{") + 1, key.lastIndexOf("}"));
}

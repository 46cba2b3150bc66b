import { ReplicaAckTimeoutError } from "./errors.js";
import type { RedisClient } from "./redis.js";

/**
 * Resolves once a replica has every write this client made so far (Redis WAIT), at once when
 * the primary has no replicas; ReplicaAckTimeoutError after `timeoutMs` without one.
 *
 * Revocations and invalidations go through this before they are acknowledged: a token record
 * missing from Redis heals (DESIGN.md §4), which is only safe if no acknowledged revocation can
 * be lost in a failover. WAIT holds the client's connection, so callers on a busy node use a
 * connection of their own for it.
 */
export async function awaitReplica(
  client: RedisClient,
  op: string,
  timeoutMs: number,
): Promise<"no_replicas" | "replicated"> {
  const role = (await client.call("ROLE")) as [string, number, unknown[]?];
  if (!Array.isArray(role[2]) || role[2].length === 0) return "no_replicas";
  const acked = Number(await client.call("WAIT", 1, timeoutMs));
  if (acked < 1) throw new ReplicaAckTimeoutError(op, timeoutMs);
  return "replicated";
}

/**
 * Writes that must be on a replica before they are acknowledged (revocations), on a connection
 * of their own: WAIT holds its connection, and a node's shared one carries every token check.
 */
export class ReplicatedWrites {
  private client: Promise<RedisClient> | undefined;

  constructor(
    /** Makes the connection, on first use: revocations are rare. */
    private readonly connect: () => Promise<RedisClient>,
    private readonly ackTimeoutMs: number,
  ) {}

  async run<T>(op: string, write: (client: RedisClient) => Promise<T>): Promise<T> {
    this.client ??= this.connect().catch((err: unknown) => {
      this.client = undefined;
      throw err;
    });
    const client = await this.client;
    const result = await write(client);
    await awaitReplica(client, op, this.ackTimeoutMs);
    return result;
  }

  async close(): Promise<void> {
    const client = await this.client?.catch(() => undefined);
    client?.disconnect();
  }
}

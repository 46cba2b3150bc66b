import type { Epoch } from "../src/store/epoch.js";

export { parseInfoServer } from "../src/store/redis-info.js";

/** One look at Redis: what INFO server, ROLE and the epoch record said. */
export interface Observation {
  at: number;
  runId: string;
  uptimeSeconds: number;
  role: string;
  epoch: Epoch;
}

export type Finding =
  | { kind: "same" }
  | { kind: "first" }
  /** The epoch is not the one we knew: Redis came back without its data. */
  | { kind: "data_loss"; previousEpochId: string }
  /** Same data, new process: a restart that kept its data (AOF/RDB). */
  | { kind: "restart" }
  /** Same data, a different server that has been up for a while: a Sentinel failover. */
  | { kind: "failover" };

/**
 * Classifies what changed between two observations. `knownEpochId` is the epoch the monitor
 * last saw, or the one its snapshot was taken in when it has just started: a data loss that
 * happened while the monitor was down is still recognised.
 */
export function classify(
  prev: Observation | undefined,
  cur: Observation,
  knownEpochId: string | undefined,
): Finding {
  if (knownEpochId !== undefined && cur.epoch.id !== knownEpochId)
    return { kind: "data_loss", previousEpochId: knownEpochId };
  if (!prev) return { kind: "first" };
  if (cur.runId === prev.runId) return { kind: "same" };
  // A server that started after our previous look restarted; one up for longer took over.
  const sincePrevSeconds = (cur.at - prev.at) / 1000;
  return cur.uptimeSeconds <= sincePrevSeconds + 2 ? { kind: "restart" } : { kind: "failover" };
}

/** The alerts the monitor sends itself, and how loud each is. */
export type AlertName =
  | "RedisRestartedWithDataLoss"
  | "RedisRestarted"
  | "RedisUnreachable"
  | "InvalidTokenSpike"
  | "SnapshotStale";

export const SEVERITY: Record<AlertName, "page" | "ticket"> = {
  RedisRestartedWithDataLoss: "page",
  RedisRestarted: "ticket",
  RedisUnreachable: "page",
  InvalidTokenSpike: "page",
  SnapshotStale: "ticket",
};

export const isAlertName = (name: string): name is AlertName => Object.hasOwn(SEVERITY, name);

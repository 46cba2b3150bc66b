import { StoreCorruptError } from "./errors.js";

/** `INFO server` text → run_id and uptime. */
export function parseInfoServer(text: string): { runId: string; uptimeSeconds: number } {
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(text)?.[1]?.trim();
  const runId = field("run_id");
  const uptime = Number(field("uptime_in_seconds"));
  if (!runId || !Number.isFinite(uptime))
    throw new StoreCorruptError("(INFO server)", "no run_id or uptime_in_seconds in the answer");
  return { runId, uptimeSeconds: uptime };
}

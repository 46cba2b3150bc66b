/** `INFO server` text → run_id and uptime. */
export function parseInfoServer(text: string): { runId: string; uptimeSeconds: number } {
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(text)?.[1]?.trim();
  const runId = field("run_id");
  const uptime = Number(field("uptime_in_seconds"));
  if (!runId || !Number.isFinite(uptime)) throw new Error("INFO server has no run_id/uptime_in_seconds");
  return { runId, uptimeSeconds: uptime };
}

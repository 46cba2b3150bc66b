import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { z } from "zod";
import { writeFileAtomic } from "../src/files/write-atomic.js";

/**
 * The alerts a monitor told its receivers are firing, in its state dir (alerts.json): a
 * monitor killed while an alert fires resolves it, or fires it again, when it starts next.
 */
const alertStateSchema = z.object({
  version: z.literal(1),
  alerts: z.array(
    z.object({
      name: z.string(),
      labels: z.record(z.string(), z.string()),
      startsAt: z.string(),
      summary: z.string(),
      description: z.string(),
    }),
  ),
});

export type FiringAlert = z.infer<typeof alertStateSchema>["alerts"][number];

/** Whole or not at all, and durable: it is written when an alert fires, before it is sent. */
export async function writeAlertState(file: string, alerts: FiringAlert[]): Promise<void> {
  const text = `${JSON.stringify({ version: 1, alerts }, null, 2)}\n`;
  await writeFileAtomic(file, text, 0o600, { durable: true });
}

/**
 * What the previous run left firing; none when there was no previous run. An unreadable file
 * is logged and read as none: it only costs a resolve that receivers never get, and refusing
 * to start over it would cost the detection itself. The next change rewrites it.
 */
export async function readAlertState(file: string, log: Logger): Promise<FiringAlert[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    log.error({ event: "alert_state_unreadable", file, reason: (err as Error).message });
    return [];
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    log.error({ event: "alert_state_unreadable", file, reason: "not JSON" });
    return [];
  }
  const parsed = alertStateSchema.safeParse(json);
  if (!parsed.success) {
    const reason = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    log.error({ event: "alert_state_unreadable", file, reason });
    return [];
  }
  return parsed.data.alerts;
}

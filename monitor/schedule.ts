/** Running the monitor's periodic work on cron schedules. */
import { type ScheduledTask, schedule } from "node-cron";
import type { Logger } from "pino";

/**
 * The monitor's periodic work on cron schedules (seconds first): one run of a task at a time,
 * a run still going when the next is due is skipped, and a failed run is logged, never thrown,
 * so one bad tick does not stop the schedule.
 */
export function scheduleTask(
  name: string,
  cron: string,
  fn: () => Promise<unknown>,
  log: Logger,
): ScheduledTask {
  const task = schedule(
    cron,
    async () => {
      try {
        await fn();
      } catch (err) {
        log.warn({ event: `${name}_failed`, err: (err as Error).message });
      }
    },
    { name, noOverlap: true, suppressMissedWarning: true },
  );
  for (const e of ["execution:overlap", "execution:missed", "execution:failed"] as const) {
    task.on(e, () => log.debug({ event: "cron", task: name, what: e }));
  }
  return task;
}

/** Running the monitor's periodic work on cron schedules. */
import { createTask, type ScheduledTask, schedule } from "node-cron";
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

/**
 * How long after a pass of `cron` began the next one has surely begun, ms: the longest gap
 * between its runs, twice (a tick is skipped while a slow pass still runs), plus 3 s for a
 * pass held up by its Redis commands' timeouts. Every second gives 5 s.
 */
export function loopFreshnessMs(cron: string): number {
  const task = createTask(cron, () => {});
  const runs = task.getNextRuns(25).map((d) => d.getTime());
  void task.destroy();
  let gap = 0;
  for (let i = 1; i < runs.length; i++) gap = Math.max(gap, (runs[i] as number) - (runs[i - 1] as number));
  return 2 * gap + 3000;
}

/**
 * The monitor's work in flight (detection passes, snapshots, scrapes), so shutdown can wait
 * for it: node-cron's destroy does not, and work cut off by closing Redis under it can leave
 * the epoch lock behind or raise an alert after the alerter has closed. Once closed, new work
 * is refused.
 */
export class InFlight {
  private closed = false;
  private readonly running = new Set<Promise<unknown>>();

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs `fn` unless closing; undefined then. */
  run<T>(fn: () => Promise<T>): Promise<T | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const p = fn();
    this.running.add(p);
    const done = () => this.running.delete(p);
    p.then(done, done);
    return p;
  }

  /**
   * Refuses new work and waits for what runs (and `also`), at most `ms`; false when something
   * was still running then.
   */
  async close(ms: number, also: Promise<unknown>[] = []): Promise<boolean> {
    this.closed = true;
    const all = Promise.allSettled([...this.running, ...also]).then(() => true);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), ms);
    });
    try {
      return await Promise.race([all, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

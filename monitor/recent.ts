/** What happened lately, as `signing-admin status` shows it under RECENT. */
export interface RecentEvent {
  kind: string;
  at: string;
  summary: string;
  description?: string;
}

const KEEP_EVENTS = 20;

/** The last events the monitor saw and what it did about them, newest first. */
export class RecentEvents {
  private readonly events: RecentEvent[] = [];

  add(kind: string, summary: string, description?: string, at = Date.now()): RecentEvent {
    const event = { kind, at: new Date(at).toISOString(), summary, ...(description ? { description } : {}) };
    this.events.unshift(event);
    this.events.length = Math.min(this.events.length, KEEP_EVENTS);
    return event;
  }

  /** Says an event better once more is known, in its place (an outage's cause comes later). */
  revise(event: RecentEvent, summary: string): void {
    event.summary = summary;
  }

  list(): RecentEvent[] {
    return [...this.events];
  }
}

/** Token checks over a recent window: all of them, the rejected ones, and their share. */
export interface TokenWindow {
  seconds: number;
  checksPerSecond: number;
  rejectedPerSecond: number;
  ratio: number;
}

/** The rates of each scrape for the last minutes, to say what share was rejected lately. */
export class TokenRates {
  private readonly samples: { at: number; checks: number; rejected: number }[] = [];

  constructor(private readonly keepMs = 5 * 60_000) {}

  add(at: number, checksPerSecond: number, rejectedPerSecond: number): void {
    this.samples.push({ at, checks: checksPerSecond, rejected: rejectedPerSecond });
    while ((this.samples[0]?.at ?? at) < at - this.keepMs) this.samples.shift();
  }

  /** Averages over the scrapes of the last `seconds` (they come at a steady pace); undefined without any. */
  over(seconds: number, now = Date.now()): TokenWindow | undefined {
    const recent = this.samples.filter((s) => s.at >= now - seconds * 1000);
    if (!recent.length) return undefined;
    const checks = recent.reduce((a, s) => a + s.checks, 0) / recent.length;
    const rejected = recent.reduce((a, s) => a + s.rejected, 0) / recent.length;
    return {
      seconds,
      checksPerSecond: checks,
      rejectedPerSecond: rejected,
      ratio: checks > 0 ? rejected / checks : 0,
    };
  }
}

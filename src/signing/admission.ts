import type { NodeMetrics } from "../metrics/node-metrics.js";

/** A place in the bounded pending set; released once, by whoever holds it last. */
export interface Slot {
  release(): void;
}

/** Why an upload got no place: the node stayed full (or the client left), or it is stopping. */
export type Refusal = "busy" | "closed";

export type Admitted = { slot: Slot } | { refused: Refusal };

/** Limits of the pending set and of the queue in front of it (`signing.*`). */
export interface AdmissionOptions {
  /** Uploads being received plus jobs queued or running. */
  maxPending: number;
  /** Of those, and of the uploads waiting for one, at most this many from one client address. */
  maxPendingPerIp: number;
  /** How long an upload may wait for a place, ms; 0 refuses at once. */
  waitMs: number;
  /** Uploads that may wait at once: each holds a socket and its buffered first bytes. */
  maxQueued: number;
  metrics: Pick<NodeMetrics, "inflight" | "admissionWait" | "admissionQueue">;
}

interface Waiter {
  ip: string;
  settle(admitted: Admitted): void;
}

/**
 * Admission to the pending set: a place at once while there is room, else a FIFO wait of up to
 * `waitMs`, so a burst of builds is served in the order it came instead of bounced into
 * retries. A newcomer never overtakes a waiter. A waiter's client address counts against its
 * per-address limit while it waits, so when a place frees the queue's head can always take it.
 */
export class Admission {
  private pendingCount = 0;
  /** Places held plus places waited for, by client address. */
  private readonly byIp = new Map<string, number>();
  /** Insertion-ordered, so the first entry is the longest waiter; deletes are O(1). */
  private readonly queue = new Set<Waiter>();
  private closed = false;

  constructor(private readonly opts: AdmissionOptions) {}

  get pending(): number {
    return this.pendingCount;
  }

  /** A place for one more upload from `ip`, waiting for one if need be; `gone` ends the wait. */
  admit(ip: string, gone?: AbortSignal): Admitted | Promise<Admitted> {
    const { maxPending, maxPendingPerIp, waitMs, maxQueued, metrics } = this.opts;
    if (this.closed) return { refused: "closed" };
    const mine = this.byIp.get(ip) ?? 0;
    const full = this.pendingCount >= maxPending || this.queue.size > 0;
    if (!full && mine < maxPendingPerIp) {
      metrics.admissionWait.observe(0);
      this.count(ip, 1);
      return { slot: this.take(ip) };
    }
    if (mine >= maxPendingPerIp || waitMs <= 0 || this.queue.size >= maxQueued || gone?.aborted) {
      metrics.admissionWait.observe(0);
      return { refused: "busy" };
    }
    return this.wait(ip, gone);
  }

  /** Refuses every waiter and every later upload: the node is stopping. */
  close(): void {
    this.closed = true;
    for (const w of [...this.queue]) w.settle({ refused: "closed" });
  }

  private wait(ip: string, gone: AbortSignal | undefined): Promise<Admitted> {
    const { metrics, waitMs } = this.opts;
    const started = process.hrtime.bigint();
    this.count(ip, 1);
    return new Promise<Admitted>((resolve) => {
      const onGone = () => waiter.settle({ refused: "busy" });
      const waiter: Waiter = {
        ip,
        settle: (admitted) => {
          if (!this.queue.has(waiter)) return;
          clearTimeout(timer);
          gone?.removeEventListener("abort", onGone);
          this.queue.delete(waiter);
          metrics.admissionQueue.set(this.queue.size);
          if ("refused" in admitted) this.count(ip, -1);
          metrics.admissionWait.observe(Number(process.hrtime.bigint() - started) / 1e9);
          resolve(admitted);
        },
      };
      const timer = setTimeout(() => waiter.settle({ refused: "busy" }), waitMs);
      gone?.addEventListener("abort", onGone, { once: true });
      this.queue.add(waiter);
      metrics.admissionQueue.set(this.queue.size);
    });
  }

  /** Takes a place for `ip`, whose address is already counted. */
  private take(ip: string): Slot {
    this.pendingCount++;
    this.opts.metrics.inflight.set(this.pendingCount);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.pendingCount--;
        this.opts.metrics.inflight.set(this.pendingCount);
        this.count(ip, -1);
        this.serveQueue();
      },
    };
  }

  /** Hands freed places to the longest waiters. */
  private serveQueue(): void {
    while (this.pendingCount < this.opts.maxPending) {
      const head = this.queue.values().next();
      if (head.done) return;
      head.value.settle({ slot: this.take(head.value.ip) });
    }
  }

  private count(ip: string, delta: number): void {
    const n = (this.byIp.get(ip) ?? 0) + delta;
    if (n > 0) this.byIp.set(ip, n);
    else this.byIp.delete(ip);
  }
}

/** The slowest upload a node keeps receiving (`signing.uploadMinBytesPerSecond`). */
export interface UploadPaceLimits {
  minBytesPerSecond: number;
  /** The rate is measured over this window, and an upload has this long before the first check. */
  windowMs: number;
}

const CHECKS_PER_WINDOW = 4;

/**
 * Watches the bytes of one upload and calls `tooSlow` once, when fewer arrived over the last
 * window than the minimum rate allows: a trickling or silent client would otherwise hold a
 * slot and a socket until Node's request timeout.
 */
export class UploadPace {
  private bytes = 0;
  private readonly samples: { at: number; bytes: number }[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly limits: UploadPaceLimits,
    private readonly tooSlow: () => void,
    private readonly now = Date.now,
  ) {
    this.samples.push({ at: now(), bytes: 0 });
    this.timer = setInterval(() => this.check(), limits.windowMs / CHECKS_PER_WINDOW);
    this.timer.unref();
  }

  add(n: number): void {
    this.bytes += n;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private check(): void {
    const at = this.now();
    this.samples.push({ at, bytes: this.bytes });
    const oldest = this.samples[0] as { at: number; bytes: number };
    if (at - oldest.at < this.limits.windowMs) return;
    while ((this.samples[1]?.at ?? at) <= at - this.limits.windowMs) this.samples.shift();
    const first = this.samples[0] as { at: number; bytes: number };
    const rate = ((this.bytes - first.bytes) * 1000) / Math.max(1, at - first.at);
    if (rate >= this.limits.minBytesPerSecond) return;
    this.stop();
    this.tooSlow();
  }
}

/**
 * The end of a whole signtool run (`--max-time`): every attempt's timeout and every pause
 * between attempts is cut to what is left, so a dead or hanging cluster holds a build no longer
 * than the budget, however many files it has.
 */
export class Deadline {
  readonly at: number;

  constructor(
    budgetMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.at = now() + budgetMs;
  }

  get remainingMs(): number {
    return Math.max(0, this.at - this.now());
  }

  get passed(): boolean {
    return this.remainingMs === 0;
  }

  /** A timeout for one attempt: `wantedMs`, or less when the run ends sooner. */
  cap(wantedMs: number): number {
    return Math.max(1, Math.min(wantedMs, this.remainingMs));
  }
}

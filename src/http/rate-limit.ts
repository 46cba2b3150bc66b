/**
 * Token buckets per key (client IP, token), in this node's memory. Idle buckets are full
 * buckets, so they are dropped; the map is bounded so a flood of distinct keys cannot grow it.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly maxKeys = 50_000,
  ) {}

  /** Takes one token for `key`: undefined when allowed, else milliseconds until one is free. */
  take(key: string, now = Date.now()): number | undefined {
    const b = this.buckets.get(key);
    const tokens = b
      ? Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.ratePerSecond)
      : this.burst;
    if (tokens < 1) {
      this.buckets.set(key, { tokens, at: now });
      return Math.ceil(((1 - tokens) / this.ratePerSecond) * 1000);
    }
    this.buckets.delete(key); // re-insert: the map's order is least recently used first
    this.buckets.set(key, { tokens: tokens - 1, at: now });
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
    return undefined;
  }
}

import type { SignedResult } from "../store/jobs.js";

interface Entry {
  result: SignedResult;
  sha1s: Set<string>;
  expiresAt: number;
}

/**
 * Results this node signed while Redis was unreachable, kept in memory (bounded by bytes,
 * oldest dropped first, expiring with `signing.resultTtl`) so the client that uploaded here
 * can still collect its signature. Keys are `format:sha256`; sha1 lookups go through an alias.
 */
export class LocalResults {
  private readonly entries = new Map<string, Entry>();
  private readonly sha1Alias = new Map<string, string>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly ttlMs: number,
  ) {}

  put(
    format: string,
    sha256: string,
    sha1: string | undefined,
    result: SignedResult,
    now = Date.now(),
  ): void {
    this.delete(`${format}:${sha256}`);
    this.entries.set(`${format}:${sha256}`, { result, sha1s: new Set(), expiresAt: now + this.ttlMs });
    if (sha1) this.alias(format, sha1, sha256);
    this.bytes += result.output.length;
    for (const key of this.entries.keys()) {
      if (this.bytes <= this.maxBytes) break;
      this.delete(key);
    }
  }

  /** Lets a classic client find a result held here by the input's sha1. */
  alias(format: string, sha1: string, sha256: string): void {
    const entry = this.entries.get(`${format}:${sha256}`);
    if (!entry) return;
    entry.sha1s.add(sha1);
    this.sha1Alias.set(`${format}:${sha1}`, sha256);
  }

  /** By sha256 or sha1 of the input. */
  get(format: string, digest: string, now = Date.now()): SignedResult | undefined {
    const sha256 = digest.length === 40 ? this.sha1Alias.get(`${format}:${digest}`) : digest;
    if (!sha256) return undefined;
    const key = `${format}:${sha256}`;
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= now) {
      this.delete(key);
      return undefined;
    }
    return entry.result;
  }

  get size(): number {
    return this.entries.size;
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    const format = key.slice(0, key.indexOf(":"));
    for (const sha1 of entry.sha1s) this.sha1Alias.delete(`${format}:${sha1}`);
    this.bytes -= entry.result.output.length;
  }
}

import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SigningClient, type SigningClientOptions } from "../src/client/signing-client.js";

export interface LoadResult {
  signed: number;
  failed: number;
  errors: string[];
  retries: number;
  latenciesMs: number[];
  /** Every job: when it started and ended (ms since the epoch), whether it was signed. */
  jobs: { start: number; end: number; ok: boolean; retries: number }[];
}

/**
 * Build machines signing continuously: each client has its own token and nonce files and signs
 * fresh random files one after another until stop() is called.
 */
export class SigningLoad {
  readonly result: LoadResult = { signed: 0, failed: 0, errors: [], retries: 0, latenciesMs: [], jobs: [] };
  private running = true;
  private readonly loops: Promise<void>[] = [];

  constructor(
    dir: string,
    /** Each client's own files, and any option of its own (a benchmark's `random`, say). */
    clients: (Pick<SigningClientOptions, "tokenFile" | "nonceFile"> & Partial<SigningClientOptions>)[],
    options: Omit<SigningClientOptions, "tokenFile" | "nonceFile">,
    format = "gpg",
  ) {
    clients.forEach((c, i) => {
      const client = new SigningClient({ ...options, ...c });
      const work = join(dir, `load-${i}`);
      mkdirSync(work, { recursive: true });
      this.loops.push(
        (async () => {
          for (let n = 0; this.running; n++) {
            const file = join(work, `f${n}.bin`);
            writeFileSync(file, randomBytes(1000 + Math.floor(Math.random() * 30_000)));
            const started = Date.now();
            try {
              const r = await client.sign(file, format);
              this.result.signed++;
              this.result.retries += r.retries;
              this.result.latenciesMs.push(Date.now() - started);
              this.result.jobs.push({ start: started, end: Date.now(), ok: true, retries: r.retries });
            } catch (err) {
              this.result.failed++;
              this.result.errors.push((err as Error).message);
              this.result.jobs.push({ start: started, end: Date.now(), ok: false, retries: 0 });
            }
          }
        })(),
      );
    });
  }

  async stop(): Promise<LoadResult> {
    this.running = false;
    await Promise.all(this.loops);
    return this.result;
  }
}

export function p99(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
}

import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EMBEDDED_FORMATS, SigningClient, type SigningClientOptions } from "../src/client/signing-client.js";

export interface LoadResult {
  signed: number;
  failed: number;
  errors: string[];
  retries: number;
  latenciesMs: number[];
  /**
   * Every job: when it started and ended (ms since the epoch), whether it was signed, and the
   * output it wrote.
   */
  jobs: { start: number; end: number; ok: boolean; retries: number; output?: string }[];
}

/** What a load signs: by default gpg signatures of fresh random files. */
export interface LoadWork {
  format?: string;
  /**
   * Client `client`'s `n`th input: its file name's extension and its bytes (default: 1 to 31 kB
   * of random bytes, `.bin`). An embedded format's signed file goes beside it as
   * `f<n>.signed<ext>`, as signtool names it.
   */
  input?: (client: number, n: number) => { ext: string; bytes: Buffer };
}

const randomInput = () => ({ ext: ".bin", bytes: randomBytes(1000 + Math.floor(Math.random() * 30_000)) });

/**
 * Build machines signing continuously: each client has its own token and nonce files and signs
 * fresh files one after another until stop() is called.
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
    { format = "gpg", input = randomInput }: LoadWork = {},
  ) {
    clients.forEach((c, i) => {
      const client = new SigningClient({ ...options, ...c });
      const work = join(dir, `load-${i}`);
      mkdirSync(work, { recursive: true });
      this.loops.push(
        (async () => {
          for (let n = 0; this.running; n++) {
            const { ext, bytes } = input(i, n);
            const file = join(work, `f${n}${ext}`);
            const output = EMBEDDED_FORMATS.has(format) ? join(work, `f${n}.signed${ext}`) : undefined;
            writeFileSync(file, bytes);
            const started = Date.now();
            try {
              const r = await client.sign(file, format, output);
              this.result.signed++;
              this.result.retries += r.retries;
              this.result.latenciesMs.push(Date.now() - started);
              this.result.jobs.push({
                start: started,
                end: Date.now(),
                ok: true,
                retries: r.retries,
                output: r.output,
              });
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

/**
 * A `random` for SigningClient whose first draw, the one its node rotation starts from (in its
 * constructor), picks node `i` of `n`; later draws (backoff jitter) are random. A load with
 * a handful of clients spreads them as many build machines starting at random nodes spread: a
 * few clients starting at random can leave a node idle, and what a fault does would then depend
 * on where they landed.
 */
export function startAtNode(i: number, n: number): () => number {
  let first = true;
  return () => {
    if (!first) return Math.random();
    first = false;
    return ((i % n) + 0.5) / n;
  };
}

export function p99(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
}

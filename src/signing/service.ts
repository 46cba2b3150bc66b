import { unlink } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { JobStore, Lookup } from "../store/jobs.js";
import type { SignerPool } from "./pool.js";
import type { FormatName, Signer } from "./signer.js";

/** An upload that has been spooled to disk and hashed on the way in. */
export interface SpooledUpload {
  path: string;
  size: number;
  sha1: string;
  sha256: string;
  filename: string;
}

export type SubmitOutcome = "cached" | "queued" | "in_progress";

export interface SigningServiceOptions {
  jobs: JobStore;
  pool: SignerPool;
  signers: ReadonlyMap<FormatName, Signer>;
  nodeId: string;
  leaseMs: number;
  log: Logger;
}

const POLL_MS = 100;

/**
 * Turns uploads into signed results: at most one node signs a given input at a time (the job
 * lease), results are shared through the store, and identical inputs are signed once.
 */
export class SigningService {
  private readonly inflight = new Set<Promise<void>>();

  constructor(private readonly opts: SigningServiceOptions) {}

  signer(format: FormatName): Signer {
    const s = this.opts.signers.get(format);
    if (!s) throw new Error(`format ${format} is not enabled`);
    return s;
  }

  get inflightJobs(): number {
    return this.inflight.size;
  }

  /** Finds a result or job by the sha256 or (classic clients) sha1 of the input. */
  async lookup(format: FormatName, digest: string): Promise<{ sha256?: string; found: Lookup }> {
    const sha256 = digest.length === 64 ? digest : await this.opts.jobs.resolveSha1(format, digest);
    if (!sha256) return { found: { kind: "none" } };
    return { sha256, found: await this.opts.jobs.lookup(format, sha256, this.signer(format).fingerprint) };
  }

  /** Polls the store until the job is no longer pending or the time is up. */
  async waitFor(format: FormatName, digest: string, timeoutMs: number, signal?: AbortSignal) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await this.lookup(format, digest);
      const pending = found.found.kind === "job" && found.found.job.state === "pending";
      if (!pending || Date.now() + POLL_MS > deadline || signal?.aborted) return found;
      await sleep(POLL_MS);
    }
  }

  /** Accepts a spooled upload; the spool file is this service's from here on. */
  async submit(format: FormatName, upload: SpooledUpload): Promise<SubmitOutcome> {
    const { jobs, nodeId, leaseMs } = this.opts;
    const found = await jobs.lookup(format, upload.sha256, this.signer(format).fingerprint);
    if (found.kind === "signed") {
      await discard(upload.path);
      return "cached";
    }
    // A failed attempt does not block a new one.
    if (found.kind === "job" && found.job.state === "failed") await jobs.release(format, upload.sha256);
    if (!(await jobs.claim(format, upload.sha256, upload.sha1, nodeId, leaseMs))) {
      await discard(upload.path);
      return "in_progress";
    }
    const job = this.run(format, upload).finally(() => this.inflight.delete(job));
    this.inflight.add(job);
    return "queued";
  }

  /** Resolves when every job this node started has finished (graceful shutdown). */
  async drain(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  private async run(format: FormatName, upload: SpooledUpload): Promise<void> {
    const { jobs, pool, nodeId, leaseMs, log } = this.opts;
    const started = process.hrtime.bigint();
    const renew = setInterval(() => {
      jobs.renewLease(format, upload.sha256, leaseMs).catch(() => {});
    }, leaseMs / 3);
    try {
      const output = await pool.sign({ format, path: upload.path });
      await jobs.complete(format, upload.sha256, { output, fingerprint: this.signer(format).fingerprint });
      log.info({
        event: "signed",
        format,
        sha256: upload.sha256,
        bytes: upload.size,
        durationMs: Number(process.hrtime.bigint() - started) / 1e6,
      });
    } catch (err) {
      log.error({ event: "signing_failed", format, sha256: upload.sha256, err: (err as Error).message });
      // If the store is down too, the lease simply expires and the client uploads again.
      await jobs.fail(format, upload.sha256, nodeId, "signing failed on this node").catch(() => {});
    } finally {
      clearInterval(renew);
      await discard(upload.path);
    }
  }
}

async function discard(path: string): Promise<void> {
  await unlink(path).catch(() => {});
}

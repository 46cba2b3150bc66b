import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { hasCode } from "../errors.js";
import { KeyBackendUnavailableError } from "../keys/key.js";
import type { AuditLog } from "../log/audit.js";
import type { NodeMetrics } from "../metrics/node-metrics.js";
import { type StoreBreakers, StoreUnavailableError } from "../store/breakers.js";
import type { JobStore, Lookup, SignedResult } from "../store/jobs.js";
import { Admission, type AdmissionOptions, type Admitted, type Slot } from "./admission.js";
import type { LocalResults } from "./local-results.js";
import type { ResultStore } from "./results.js";
import type { FormatName, Signer, SignInput } from "./signer.js";

/** An upload received in full and read on the way in; its bytes are kept only if its format needs them. */
export interface Upload {
  size: number;
  sha256: string;
  /** Present when the client may poll by sha1 (see ReceivedFile). */
  sha1?: string;
  /** What its format's signer needs of it (the running SHA-256, and what `needs` asked). */
  input: SignInput;
  filename: string;
  /** Hash of the id of the token that uploaded it, for the job's log and audit lines. */
  tokenHash?: string;
  /** The uploading client's address, for the audit line. */
  clientIp?: string;
}

export type SubmitOutcome = "cached" | "queued" | "in_progress";

export interface Submitted {
  outcome: SubmitOutcome;
  /**
   * The signed result when this node has it or is making it (cached, or queued here): it
   * settles within milliseconds, undefined if signing failed. Absent when another node signs.
   */
  result?: Promise<SignedResult | undefined>;
}

/** What a node's signing service runs on: its stores, limits, signers and what it reports to. */
export interface SigningServiceOptions {
  jobs: JobStore;
  signers: ReadonlyMap<FormatName, Signer>;
  nodeId: string;
  leaseMs: number;
  breakers: StoreBreakers;
  metrics: NodeMetrics;
  /** Results signed while Redis was unreachable, served from this node. */
  local: LocalResults;
  /** The pending set's limits and the queue in front of it. */
  admission: Omit<AdmissionOptions, "metrics">;
  /** Whole-file results: the ones in this node's spool are found without the store. */
  files: ResultStore;
  audit: AuditLog;
  log: Logger;
}

export type { Admitted, Slot };

/**
 * The error a job records when its node's key backend failed: whoever asks for that job (on
 * any node) is answered 503 KEY_BACKEND_UNAVAILABLE, so the client uploads again elsewhere.
 */
export const KEY_BACKEND_JOB_ERROR = "KEY_BACKEND_UNAVAILABLE";

/** Jobs on other nodes are only seen in the store; this node's own jobs wake their waiters. */
const POLL_MS = 100;

/**
 * Turns uploads into signed results: at most one node signs a given input at a time (the job
 * lease), results are shared through the store, and identical inputs are signed once. When
 * the store is unreachable it signs anyway and keeps the result in this node's memory.
 */
export class SigningService {
  private readonly inflight = new Set<Promise<unknown>>();
  /** Jobs running without the store: `format:sha256` and `format:sha1` → sha256. */
  private readonly localPending = new Map<string, string>();
  private readonly admission: Admission;
  /** Requests waiting (?wait=) for a job this node runs, by `format:digest` (sha256 and sha1). */
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(private readonly opts: SigningServiceOptions) {
    this.admission = new Admission({ ...opts.admission, metrics: opts.metrics });
  }

  signer(format: FormatName): Signer {
    const s = this.opts.signers.get(format);
    if (!s) throw new Error(`format ${format} is not enabled`);
    return s;
  }

  get inflightJobs(): number {
    return this.inflight.size;
  }

  /**
   * A place for one more upload from `ip`: at once, or after waiting in line (up to
   * `signing.admissionWaitMs`) while this node has `maxPending` in hand; `gone` ends the wait.
   */
  admit(ip: string, gone?: AbortSignal): Admitted | Promise<Admitted> {
    return this.admission.admit(ip, gone);
  }

  /** Refuses the uploads waiting for a place and every later one: the node is stopping. */
  stopAdmitting(): void {
    this.admission.close();
  }

  /** Finds a result or job by the sha256 or (classic clients) sha1 of the input. */
  async lookup(format: FormatName, digest: string): Promise<{ sha256?: string; found: Lookup }> {
    const fingerprint = this.signer(format).fingerprint;
    const local = this.opts.local.get(format, digest);
    if (local && local.fingerprint === fingerprint) return { found: { kind: "signed", result: local } };
    const held = this.opts.files.held(format, digest);
    if (held) return { sha256: held.inputSha256, found: { kind: "file", file: held.file } };
    const localJob = this.localPending.get(`${format}:${digest}`);
    if (localJob)
      return { sha256: localJob, found: { kind: "job", job: { state: "pending", node: this.opts.nodeId } } };
    const { jobs, breakers } = this.opts;
    try {
      const sha256 =
        digest.length === 64
          ? digest
          : await breakers.run("jobs", "job_resolve_sha1", () => jobs.resolveSha1(format, digest));
      if (!sha256) return { found: { kind: "none" } };
      return {
        sha256,
        found: await breakers.run("jobs", "job_lookup", () => jobs.lookup(format, sha256, fingerprint)),
      };
    } catch (err) {
      // Without the store, what this node does not hold is unknown here: the client uploads
      // again and this node signs it.
      if (err instanceof StoreUnavailableError) return { found: { kind: "none" } };
      throw err;
    }
  }

  /** Polls until the job is no longer pending or the time is up. */
  async waitFor(format: FormatName, digest: string, timeoutMs: number, signal?: AbortSignal) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await this.lookup(format, digest);
      const pending = found.found.kind === "job" && found.found.job.state === "pending";
      if (!pending || Date.now() + POLL_MS > deadline || signal?.aborted) return found;
      await this.jobEndOrPoll(`${format}:${digest}`);
    }
  }

  /** Resolves when this node finishes the job for `key`, or after one poll interval. */
  private jobEndOrPoll(key: string): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(key) ?? new Set();
      this.waiters.set(key, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
        resolve();
      };
      const timer = setTimeout(done, POLL_MS);
      set.add(done);
    });
  }

  private wake(format: string, upload: Upload): void {
    for (const key of digestKeys(format, upload)) {
      for (const done of [...(this.waiters.get(key) ?? [])]) done();
    }
  }

  /**
   * Accepts a received upload; the slot, and the upload's temp file if it has one, are this
   * service's from here on (the file is removed once no job of this node needs it).
   */
  async submit(format: FormatName, upload: Upload, slot: Slot): Promise<Submitted> {
    const file = upload.input.file;
    try {
      const submitted = await this.claimAndStart(format, upload, slot);
      if (!submitted.result || submitted.outcome !== "queued") await file?.remove();
      return submitted;
    } catch (err) {
      await file?.remove();
      throw err;
    }
  }

  private async claimAndStart(format: FormatName, upload: Upload, slot: Slot): Promise<Submitted> {
    const signer = this.signer(format);
    if (!signer.key.available()) {
      // Its breaker is open: no job is claimed that this node could only fail.
      slot.release();
      throw new KeyBackendUnavailableError(signer.key.location, "its breaker is open");
    }
    try {
      await signer.accept?.({ ...upload.input, fileName: upload.filename });
    } catch (err) {
      slot.release();
      throw err;
    }
    const key = `${format}:${upload.sha256}`;
    try {
      const local = this.opts.local.get(format, upload.sha256);
      if (local?.fingerprint === signer.fingerprint && this.serves(signer, local, upload))
        return this.cached(format, upload, slot, local);
      if (this.localPending.has(key)) return this.duplicate(slot);
      return await this.fromStore(signer, upload, slot);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) {
        slot.release();
        throw err;
      }
      // No store: sign here, keep the result here. Builds keep signing through the outage.
      for (const k of digestKeys(format, upload)) this.localPending.set(k, upload.sha256);
      return { outcome: "queued", result: this.start(format, upload, slot, false) };
    }
  }

  /** Whether a stored output answers this upload too (minisign's names the file it signed). */
  private serves(signer: Signer, result: SignedResult, upload: Upload): boolean {
    return signer.serves?.(result.output, { ...upload.input, fileName: upload.filename }) ?? true;
  }

  /** The upload against the shared store: its result, a job taken to make it, or another node's job. */
  private async fromStore(signer: Signer, upload: Upload, slot: Slot): Promise<Submitted> {
    const { jobs, nodeId, leaseMs, breakers } = this.opts;
    const format = signer.format;
    const found = await breakers.run("jobs", "job_claim", () =>
      jobs.lookupOrClaim(format, upload.sha256, signer.fingerprint, nodeId, leaseMs, upload.sha1),
    );
    if (found.kind === "signed" && this.serves(signer, found.result, upload))
      return this.cached(format, upload, slot, found.result);
    if (found.kind === "file") return this.cachedFile(format, slot);
    if (found.kind === "claimed")
      return { outcome: "queued", result: this.start(format, upload, slot, true) };
    // A failed attempt does not block a new one; an output that does not answer this upload is
    // signed anew, replacing it.
    const failed = found.kind === "job" && found.job.state === "failed";
    if (failed) await breakers.run("jobs", "job_release", () => jobs.release(format, upload.sha256));
    if (failed || found.kind === "signed") {
      const claimed = await breakers.run("jobs", "job_claim", () =>
        jobs.claim(format, upload.sha256, nodeId, leaseMs, upload.sha1),
      );
      if (claimed) return { outcome: "queued", result: this.start(format, upload, slot, true) };
    }
    // Another node holds the job (or just finished it): the client waits for that one.
    return this.duplicate(slot);
  }

  /**
   * Resolves true when every upload this node admitted has been received and every job it
   * started has finished; false if `timeoutMs` passes first.
   */
  async drain(timeoutMs = Number.POSITIVE_INFINITY): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.admission.pending > 0 || this.inflight.size > 0) {
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(50, deadline - Date.now()));
    }
    return true;
  }

  private cached(format: FormatName, upload: Upload, slot: Slot, result: SignedResult): Submitted {
    this.opts.metrics.cacheHits.inc({ format });
    if (upload.sha1) this.opts.local.alias(format, upload.sha1, upload.sha256);
    slot.release();
    return { outcome: "cached", result: Promise.resolve(result) };
  }

  /** A whole-file output some node holds: the client GETs it (if its owner is gone: a 404, and it uploads again). */
  private cachedFile(format: FormatName, slot: Slot): Submitted {
    this.opts.metrics.cacheHits.inc({ format });
    slot.release();
    return { outcome: "cached" };
  }

  private duplicate(slot: Slot): Submitted {
    slot.release();
    return { outcome: "in_progress" };
  }

  private start(
    format: FormatName,
    upload: Upload,
    slot: Slot,
    shared: boolean,
  ): Promise<SignedResult | undefined> {
    const lease = shared ? this.keepLease(format, upload.sha256) : undefined;
    const job = this.run(format, upload, shared).finally(async () => {
      clearInterval(lease);
      await upload.input.file?.remove();
      this.inflight.delete(job);
      slot.release();
    });
    this.inflight.add(job);
    return job;
  }

  /**
   * Renews the job's lease while this node signs: osslsigncode on a large file may run past one
   * lease (its timeout is longer), and a lease that lapsed would have GETs answer "upload again"
   * and let another node sign the same file.
   */
  private keepLease(format: FormatName, sha256: string): NodeJS.Timeout {
    const { jobs, nodeId, leaseMs, breakers } = this.opts;
    const renew = () => jobs.renew(format, sha256, nodeId, leaseMs);
    const timer = setInterval(
      () => void breakers.run("jobs", "job_renew", renew).catch(() => {}),
      Math.max(100, Math.floor(leaseMs / 3)),
    );
    timer.unref();
    return timer;
  }

  /**
   * Signs and stores the output where clients find it: a signature in the job (or this node's
   * memory without the store); a whole signed file in this node's spool, its record naming this
   * node (undefined: the client GETs it).
   */
  private async signAndStore(
    signer: Signer,
    format: FormatName,
    upload: Upload,
  ): Promise<SignedResult | undefined> {
    const { jobs, breakers } = this.opts;
    const input = { ...upload.input, fileName: upload.filename };
    if (signer.kind === "embedded") {
      await withOutputFile(async (outputFile) => {
        await signer.signFile?.(input, outputFile);
        const digests = { sha256: upload.sha256, ...(upload.sha1 ? { sha1: upload.sha1 } : {}) };
        await this.opts.files.putFile(format, digests, outputFile);
      });
      return undefined;
    }
    const result = { output: await signer.sign(input), fingerprint: signer.fingerprint };
    try {
      await breakers.run("jobs", "job_complete", () => jobs.complete(format, upload.sha256, result));
    } catch {
      // The store went away (or never was there): the uploading client collects it here.
      this.opts.local.put(format, upload.sha256, upload.sha1, result);
    }
    return result;
  }

  private async run(format: FormatName, upload: Upload, shared: boolean): Promise<SignedResult | undefined> {
    const { jobs, nodeId, log, breakers, metrics } = this.opts;
    const signer = this.signer(format);
    const fingerprint = signer.fingerprint;
    const endTimer = metrics.duration.startTimer({ format });
    const started = process.hrtime.bigint();
    try {
      const result = await this.signAndStore(signer, format, upload);
      metrics.jobs.inc({ format, result: "signed" });
      metrics.bytes.inc({ format }, upload.size);
      endTimer();
      this.opts.audit.write({
        event: "signed",
        format,
        sha256: upload.sha256,
        bytes: upload.size,
        keyFingerprint: fingerprint,
        ...(upload.tokenHash ? { tokenHash: upload.tokenHash } : {}),
        ...(upload.clientIp ? { from: upload.clientIp } : {}),
      });
      log.info({
        event: "signed",
        format,
        sha256: upload.sha256,
        bytes: upload.size,
        durationMs: Number(process.hrtime.bigint() - started) / 1e6,
        store: shared ? "shared" : "local",
        node: nodeId,
        tokenHash: upload.tokenHash,
      });
      return result;
    } catch (err) {
      const why = jobError(err);
      if (unsupportedInputReason(why) === undefined) {
        metrics.jobs.inc({ format, result: "failed" });
        log.error({ event: "signing_failed", format, sha256: upload.sha256, err: (err as Error).message });
      } else {
        // The format's tool found the content unsignable: the client's mistake, not a failure.
        metrics.jobs.inc({ format, result: "refused" });
        log.info({ event: "signing_refused", format, sha256: upload.sha256, reason: (err as Error).message });
      }
      // If the store is down too, the lease simply expires and the client uploads again.
      if (shared) {
        await breakers
          .run("jobs", "job_fail", () => jobs.fail(format, upload.sha256, nodeId, why))
          .catch(() => {});
      }
      return undefined;
    } finally {
      for (const k of digestKeys(format, upload)) this.localPending.delete(k);
      this.wake(format, upload);
    }
  }
}

/** A failed job's error when the format found the content unsignable, before its reason. */
const UNSUPPORTED_INPUT_JOB_ERROR = "UNSUPPORTED_INPUT: ";

/**
 * What a failed job records: whoever asks for it learns whether to upload it again elsewhere,
 * or that the format cannot sign this content (found only when signing, e.g. by osslsigncode).
 */
function jobError(err: unknown): string {
  if (hasCode(err, "KEY_BACKEND_UNAVAILABLE")) return KEY_BACKEND_JOB_ERROR;
  if (hasCode(err, "UNSUPPORTED_INPUT")) return `${UNSUPPORTED_INPUT_JOB_ERROR}${(err as Error).message}`;
  return "signing failed on this node";
}

/** The format's reason, when a failed job's error says it cannot sign the content. */
export function unsupportedInputReason(jobErrorText: string): string | undefined {
  return jobErrorText.startsWith(UNSUPPORTED_INPUT_JOB_ERROR)
    ? jobErrorText.slice(UNSUPPORTED_INPUT_JOB_ERROR.length)
    : undefined;
}

/** The `format:digest` keys an upload may be asked for by: its sha256, and its sha1 if known. */
function digestKeys(format: string, upload: Upload): string[] {
  return upload.sha1
    ? [`${format}:${upload.sha256}`, `${format}:${upload.sha1}`]
    : [`${format}:${upload.sha256}`];
}

/** A private temp dir for one signed file until the spool has copied it. */
async function withOutputFile(use: (outputFile: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "signing-output-"));
  try {
    await use(join(dir, "signed"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

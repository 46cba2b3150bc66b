import type { Logger } from "pino";
import { type StoreBreakers, StoreUnavailableError } from "../store/breakers.js";
import type { FileResult, JobStore } from "../store/jobs.js";
import type { FormatName } from "./signer.js";
import type { OpenedFile, Spool, SpooledFile } from "./spool.js";

/** What a ResultStore is built from (startNode assembles it). */
export interface ResultStoreOptions {
  spool: Spool;
  jobs: JobStore;
  breakers: StoreBreakers;
  /** The fingerprint of each enabled format's key: results from another key are not served. */
  fingerprintOf(format: FormatName): string;
  log: Logger;
}

/** The input an output was signed from, as its job and its clients name it. */
export interface SignedInput {
  sha256: string;
  /** When a classic client may ask for the output by the input's sha1. */
  sha1?: string;
}

/**
 * Whole-file results (embedded formats): the output stays once on this node's spool, the
 * record in Redis names this node, and any node serves it by fetching from here. The format
 * layer hands its output file to putFile; the GET path asks held / open / forget.
 */
export class ResultStore {
  private owner: string | undefined;

  constructor(private readonly opts: ResultStoreOptions) {}

  /**
   * This node's `node.advertiseUrl` (or its listen URL, known once it listens): what its file
   * results name as their owner.
   */
  advertise(url: string): void {
    this.owner = new URL(url).origin;
  }

  get advertiseUrl(): string {
    if (this.owner === undefined) throw new Error("ResultStore used before the node listens");
    return this.owner;
  }

  /**
   * Stores the signed output at `filePath` (moved into the spool, so it may be gone after: the
   * caller removes its own directory either way) and records it in Redis as this node's, ending the input's job. Without Redis the
   * output is still served by this node, which finds it in its spool.
   */
  async putFile(format: FormatName, input: SignedInput, filePath: string): Promise<FileResult> {
    const { spool, jobs, breakers, log } = this.opts;
    const spooled = await spool.put(
      {
        format,
        inputSha256: input.sha256,
        ...(input.sha1 ? { inputSha1: input.sha1 } : {}),
        fingerprint: this.opts.fingerprintOf(format),
      },
      filePath,
    );
    const file = fileResult(spooled, this.advertiseUrl);
    try {
      await breakers.run("jobs", "result_file_put", () =>
        Promise.all([
          jobs.completeFile(format, input.sha256, file),
          input.sha1 ? jobs.aliasSha1(format, input.sha1, input.sha256) : undefined,
        ]),
      );
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      log.warn({ event: "file_result_local", format, sha256: input.sha256, err: err.message });
    }
    return file;
  }

  /** The result this node's spool holds for an input's sha256 or sha1, made with today's key. */
  held(format: FormatName, digest: string): { inputSha256: string; file: FileResult } | undefined {
    const spooled = this.opts.spool.get(format, digest);
    if (!spooled || spooled.fingerprint !== this.opts.fingerprintOf(format)) return undefined;
    return { inputSha256: spooled.inputSha256, file: fileResult(spooled, this.advertiseUrl) };
  }

  /** Whether `file` names this node as its owner. */
  owns(file: FileResult): boolean {
    return file.owner === this.advertiseUrl;
  }

  /**
   * The output opened and checked against its digests, or undefined when this node does not
   * have it; an output whose bytes changed on disk is dropped with a log line, never served.
   */
  async open(format: string, inputSha256: string): Promise<OpenedFile | undefined> {
    const opened = await this.opts.spool.open(format, inputSha256);
    if (opened === "corrupt") {
      this.opts.log.error({ event: "spool_file_corrupt", format, sha256: inputSha256 });
      return undefined;
    }
    return opened === "missing" ? undefined : opened;
  }

  /**
   * Forgets a result its owner could not serve, so the client's next upload signs the input
   * again instead of finding it "cached". Best effort: left in place, it expires.
   */
  async forget(format: FormatName, inputSha256: string, file: FileResult): Promise<void> {
    const { jobs, breakers, log } = this.opts;
    try {
      await breakers.run("jobs", "result_file_drop", () => jobs.dropFile(format, inputSha256, file));
    } catch (err) {
      log.warn({
        event: "file_result_not_dropped",
        format,
        sha256: inputSha256,
        err: (err as Error).message,
      });
    }
  }

  close(): void {
    this.opts.spool.close();
  }
}

function fileResult(spooled: SpooledFile, owner: string): FileResult {
  const { fingerprint, sha1, sha256, size } = spooled;
  return { fingerprint, owner, sha1, sha256, size };
}

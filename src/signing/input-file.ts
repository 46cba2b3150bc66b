import { createWriteStream, mkdtempSync, type WriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Bytes an input's temp file takes before the upload waits for the disk. */
const WRITE_BUFFER_BYTES = 1024 * 1024;

/** An upload spooled to a private temp file while it was read; whoever ends its use removes it. */
export interface SpooledInput {
  path: string;
  /** Removes the file and its private dir; idempotent. */
  remove(): Promise<void>;
}

/**
 * An upload written to a private temp file while it is read (embedded formats sign whole
 * files, which are never held in memory): a dir of its own (mode 0700, as mkdtemp makes it),
 * removed when the upload's use ends or it is abandoned.
 */
export class InputFile {
  private readonly dir: string;
  private readonly out: WriteStream;
  private failed: Error | undefined;

  constructor(parent = tmpdir()) {
    // One mkdir per upload: cheap enough to do synchronously where the first chunk arrives.
    this.dir = mkdtempSync(join(parent, "signing-input-"));
    // A larger buffer: at the 16 KiB default every 64 KiB socket read paused the upload until the
    // disk write came back. 1 MiB per upload in flight (maxPending of them) bounds the memory.
    this.out = createWriteStream(join(this.dir, "input"), { mode: 0o600, highWaterMark: WRITE_BUFFER_BYTES });
    this.out.on("error", (err) => {
      this.failed = err;
    });
  }

  /** False when the caller should wait for `drained()` before writing more. */
  write(chunk: Buffer): boolean {
    return this.out.write(chunk);
  }

  drained(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.out.writableNeedDrain || this.failed) resolve();
      else {
        // Whichever comes first removes the other, so long uploads pile up no listeners.
        const done = () => {
          this.out.off("drain", done);
          this.out.off("error", done);
          resolve();
        };
        this.out.once("drain", done);
        this.out.once("error", done);
      }
    });
  }

  /** The whole file, flushed; a write that failed (a full disk) fails here. */
  async end(): Promise<SpooledInput> {
    await new Promise<void>((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      this.out.once("error", reject);
      this.out.end(() => resolve());
    }).catch(async (err: unknown) => {
      await this.discard();
      throw err;
    });
    const dir = this.dir;
    return { path: join(dir, "input"), remove: () => rm(dir, { recursive: true, force: true }) };
  }

  /** Abandons the file (an upload refused or interrupted). */
  async discard(): Promise<void> {
    this.out.destroy();
    await rm(this.dir, { recursive: true, force: true });
  }
}

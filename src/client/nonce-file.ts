import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../files/write-atomic.js";
import { ClientError } from "./errors.js";

/**
 * The token's nonce chain as the client keeps it: the classic nonce file (empty or missing
 * for a new token). Uploads take the chain one at a time, and every advance is written
 * atomically before the next upload starts, so a crash never leaves a torn or stale file.
 */
export class NonceChain {
  private value: string | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  /** A new token's chain is kept in memory only until that token has signed something. */
  private uncommitted = false;

  constructor(readonly file: string) {}

  async read(): Promise<string> {
    if (this.value === undefined) {
      try {
        this.value = (await readFile(this.file, "utf8")).trim();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
          throw new ClientError(
            "LOCAL_IO",
            `cannot read nonce file ${this.file}: ${(err as NodeJS.ErrnoException).code}`,
          );
        }
        this.value = "";
      }
    }
    return this.value;
  }

  async set(value: string): Promise<void> {
    this.value = value;
    if (!this.uncommitted) await writeFileAtomic(this.file, value, 0o600);
  }

  /** Starts a new token's chain (the empty nonce) without touching the file. */
  restart(): Promise<void> {
    return this.use(async () => {
      this.uncommitted = true;
      return { result: undefined, next: "" };
    });
  }

  /** The new token signed something: from now on its chain is kept in the file. */
  commit(): Promise<void> {
    return this.use(async () => {
      if (this.uncommitted) {
        this.uncommitted = false;
        await writeFileAtomic(this.file, this.value ?? "", 0o600);
      }
      return { result: undefined };
    });
  }

  /**
   * Runs `fn` with the current nonce while no other upload holds the chain; `fn` returns the
   * next nonce (or undefined to keep the current one).
   */
  use<T>(fn: (nonce: string) => Promise<{ result: T; next?: string }>): Promise<T> {
    const run = this.tail.then(async () => {
      const { result, next } = await fn(await this.read());
      if (next !== undefined && next !== this.value) await this.set(next);
      return result;
    });
    this.tail = run.catch(() => {});
    return run;
  }
}

import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { chmod, type FileHandle, open, rename, stat, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { SigningClusterError } from "../errors.js";

/** What the spool knows of one stored output: enough to serve it and to check it first. */
export interface SpooledFile {
  format: string;
  /** The sha256 of the input it was signed from: the output's name in the spool and in Redis. */
  inputSha256: string;
  /** The sha1 of that input, when a classic client may ask for it by sha1. */
  inputSha1?: string;
  /** Fingerprint of the key it was signed with. */
  fingerprint: string;
  /** Of the output. */
  sha1: string;
  sha256: string;
  size: number;
}

/** `signing.spool.*`: where the outputs live and how much of them a node keeps. */
export interface SpoolOptions {
  /** A directory of this node's own; undefined: a private temporary one, made on first use. */
  directory?: string;
  maxBytes: number;
  maxEntries: number;
}

/** What the spool reports as it works (the node counts it: signing_spool_evictions_total). */
export interface SpoolEvents {
  /** An output deleted to make room for another, because the spool was at `limit`. */
  evicted?(file: SpooledFile, limit: "bytes" | "entries"): void;
}

/** One output opened for reading, checked against its digests: read it, then close it. */
export interface OpenedFile {
  file: SpooledFile;
  handle: FileHandle;
}

/** Why an output was not opened: never stored (or evicted), or its bytes changed on disk. */
export type OpenFailure = "missing" | "corrupt";

const NAME = /^[a-z0-9-]{1,32}\.[0-9a-f]{64}$/;
const TEMP = /^\.[a-z0-9-]{1,32}\.[0-9a-f]{64}\.[0-9a-f]{12}\.tmp$/;

/** An output's sha1, sha256 and length, as its bytes go by. */
class OutputDigests {
  private readonly s1 = createHash("sha1");
  private readonly s256 = createHash("sha256");
  private size = 0;

  update(chunk: Buffer): void {
    this.s1.update(chunk);
    this.s256.update(chunk);
    this.size += chunk.length;
  }

  digests(): { sha1: string; sha256: string; size: number } {
    return { sha1: this.s1.digest("hex"), sha256: this.s256.digest("hex"), size: this.size };
  }
}

/** Passes bytes through while computing their sha1, sha256 and length. */
export class DigestingStream extends Transform {
  private readonly digesting = new OutputDigests();

  override _transform(
    chunk: Buffer,
    _enc: BufferEncoding,
    done: (err?: Error | null, data?: Buffer) => void,
  ) {
    this.digesting.update(chunk);
    done(null, chunk);
  }

  digests(): { sha1: string; sha256: string; size: number } {
    return this.digesting.digests();
  }
}

/** Reads an open file through from offset 0 (by position: the handle is read again later). */
async function digestsOf(handle: FileHandle) {
  const digesting = new OutputDigests();
  const buf = Buffer.allocUnsafe(256 * 1024);
  for (let position = 0; ; ) {
    const { bytesRead } = await handle.read(buf, 0, buf.length, position);
    if (bytesRead === 0) break;
    digesting.update(buf.subarray(0, bytesRead));
    position += bytesRead;
  }
  return digesting.digests();
}

/** Renames `from` (made 0600 first, as a copy would be) to `to`; false across file systems. */
async function renamed(from: string, to: string): Promise<boolean> {
  try {
    await chmod(from, 0o600); // before it is in the spool: never readable by others there
    await rename(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EXDEV") return false;
    throw err;
  }
}

async function digestsOfPath(path: string) {
  const handle = await open(path, "r");
  try {
    return await digestsOf(handle);
  } finally {
    await handle.close();
  }
}

/** Copies `from` to a new file `to` (0600), taking its digests on the way. */
async function copied(from: string, to: string) {
  const digesting = new DigestingStream();
  await pipeline(createReadStream(from), digesting, createWriteStream(to, { flags: "wx", mode: 0o600 }));
  return digesting.digests();
}

/**
 * Whole-file outputs (embedded formats) this node signed, on its disk until some node serves
 * them: each stored once, atomically (a temp file, then rename), files 0600 in a 0700
 * directory, the least recently used deleted to stay under the quota. The index lives in
 * memory and the directory is emptied at start: a restarted node has no record of what its
 * files are (key, digests), and re-reading gigabytes at start to rebuild one would delay
 * readiness for outputs whose clients simply upload again (a missing output is a 404, and
 * the documented answer to a 404 is to upload).
 */
export class Spool {
  /** By `format:inputSha256`, least recently used first (Map keeps insertion order). */
  private readonly entries = new Map<string, SpooledFile>();
  /** `format:inputSha1` → inputSha256, for classic clients asking by sha1. */
  private readonly sha1Alias = new Map<string, string>();
  private bytes = 0;
  /** Bytes of outputs being copied in: counted against the quota before they land. */
  private writing = 0;
  private dir: string | undefined;
  private readonly temporary: boolean;

  constructor(
    private readonly opts: SpoolOptions,
    private readonly events: SpoolEvents = {},
  ) {
    this.temporary = opts.directory === undefined;
    if (opts.directory === undefined) return;
    try {
      mkdirSync(opts.directory, { recursive: true, mode: 0o700 });
      this.clearEarlierOutputs(opts.directory);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new SigningClusterError(
        "CONFIG_INVALID",
        `signing.spool.directory: cannot use ${opts.directory}: ${why}`,
      );
    }
    this.dir = opts.directory;
  }

  /** Outputs and temp files of an earlier run: only names the spool itself makes are removed. */
  private clearEarlierOutputs(dir: string): void {
    for (const name of readdirSync(dir)) if (NAME.test(name) || TEMP.test(name)) rmSync(join(dir, name));
  }

  private directory(): string {
    this.dir ??= mkdtempSync(join(tmpdir(), "signing-spool-"));
    return this.dir;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Moves the output at `source` into the spool (the caller's copy is gone after), computing
   * its digests on the way; evicts
   * the least recently used first so the spool stays under its quota while it is written.
   */
  async put(meta: Omit<SpooledFile, "sha1" | "sha256" | "size">, source: string): Promise<SpooledFile> {
    const expected = (await stat(source)).size;
    if (expected > this.opts.maxBytes)
      throw new SigningClusterError(
        "SIGNING_FAILED",
        `an output of ${expected} bytes is larger than signing.spool.maxBytes (${this.opts.maxBytes})`,
      );
    const key = `${meta.format}:${meta.inputSha256}`;
    this.drop(key);
    this.evictFor(expected);
    this.writing += expected;
    let digests: ReturnType<OutputDigests["digests"]>;
    try {
      digests = await this.copyIn(source, `${meta.format}.${meta.inputSha256}`);
    } finally {
      this.writing -= expected;
    }
    const file: SpooledFile = { ...meta, ...digests };
    this.delete(key); // a concurrent put of the same output: the last rename won, count it once
    this.entries.set(key, file);
    if (file.inputSha1) this.sha1Alias.set(`${file.format}:${file.inputSha1}`, file.inputSha256);
    this.bytes += file.size;
    return file;
  }

  /**
   * Moves `source` to `name` through a temp name and a rename, so readers never see a part: a
   * rename on the spool's file system, else a copy. Either way its digests are read once.
   */
  private async copyIn(source: string, name: string) {
    const dir = this.directory();
    const tmp = join(dir, `.${name}.${randomBytes(6).toString("hex")}.tmp`);
    try {
      const digests = (await renamed(source, tmp)) ? await digestsOfPath(tmp) : await copied(source, tmp);
      await rename(tmp, join(dir, name));
      return digests;
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  /** The entry for an input's sha256 or sha1, without touching the disk. */
  get(format: string, digest: string): SpooledFile | undefined {
    const sha256 = digest.length === 40 ? this.sha1Alias.get(`${format}:${digest}`) : digest;
    return sha256 === undefined ? undefined : this.entries.get(`${format}:${sha256}`);
  }

  /**
   * Opens an output and checks it against the digests taken when it was stored, so a file
   * changed on disk is never served (it is dropped instead). The handle stays valid when the
   * file is evicted meanwhile: the caller reads it from offset 0 and closes it.
   */
  async open(format: string, inputSha256: string): Promise<OpenedFile | OpenFailure> {
    const key = `${format}:${inputSha256}`;
    const file = this.entries.get(key);
    if (!file || this.dir === undefined) return "missing";
    let handle: FileHandle;
    try {
      handle = await open(join(this.dir, `${format}.${inputSha256}`), "r");
    } catch {
      if (this.current(key, file)) this.delete(key);
      return "missing";
    }
    let found: ReturnType<OutputDigests["digests"]>;
    try {
      found = await digestsOf(handle);
    } catch (err) {
      await handle.close();
      throw err;
    }
    if (found.sha256 !== file.sha256 || found.sha1 !== file.sha1 || found.size !== file.size) {
      await handle.close();
      if (this.current(key, file)) this.drop(key);
      return "corrupt";
    }
    // Evicted or stored again while it was read: the open handle still holds these checked
    // bytes, but the spool's entry and byte count are no longer this file's to touch.
    if (this.current(key, file)) this.touch(key, file);
    return { file, handle };
  }

  /** Whether `file` is still the spool's entry for `key` (reads and stores await the disk). */
  private current(key: string, file: SpooledFile): boolean {
    return this.entries.get(key) === file;
  }

  private touch(key: string, file: SpooledFile): void {
    this.entries.delete(key);
    this.entries.set(key, file);
  }

  private evictFor(incoming: number): void {
    for (const [key, file] of this.entries) {
      const overBytes = this.bytes + this.writing + incoming > this.opts.maxBytes;
      if (!overBytes && this.entries.size < this.opts.maxEntries) return;
      this.drop(key);
      this.events.evicted?.(file, overBytes ? "bytes" : "entries");
    }
  }

  /** Forgets an entry and deletes its file (readers holding it open keep reading). */
  private drop(key: string): void {
    const file = this.entries.get(key);
    this.delete(key);
    if (file && this.dir !== undefined)
      rmSync(join(this.dir, `${file.format}.${file.inputSha256}`), { force: true });
  }

  private delete(key: string): void {
    const file = this.entries.get(key);
    if (!file) return;
    this.entries.delete(key);
    if (file.inputSha1 && this.sha1Alias.get(`${file.format}:${file.inputSha1}`) === file.inputSha256)
      this.sha1Alias.delete(`${file.format}:${file.inputSha1}`);
    this.bytes -= file.size;
  }

  /** At stop: a temporary spool goes with the node; a configured one is emptied at next start. */
  close(): void {
    if (this.temporary && this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }
}

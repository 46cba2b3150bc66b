import { randomBytes } from "node:crypto";
import { closeSync, constants, openSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { copyFile, type FileHandle, open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * A temp file's name beside `path`. Random per call, not a counter: in a directory others can
 * write to, a name they could guess is one they could take first.
 */
function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
}

/**
 * Writes a file so that readers see the old content or the new one, never a part: a temp file
 * in the same directory, then rename. `durable` also fsyncs the file and its directory, for
 * files that must survive a power loss (the monitor's snapshots). signtool's files (signatures,
 * the nonce, a token) need not: a machine that crashes reruns its build with a fresh token, and
 * two fsyncs per file would cost more than the signing itself. Those small files are written
 * with synchronous calls: each asynchronous one (open, write, close, rename) is a hand-off to
 * libuv's thread pool and back: 290 µs of CPU per file on tmpfs on the development VM, against
 * 50 µs (bench/machine), and signtool writes two files per signature.
 */
export async function writeFileAtomic(
  path: string,
  data: Buffer | string,
  mode = 0o644,
  { durable = false } = {},
): Promise<void> {
  const tmp = tempNameFor(path);
  // Opened before the try: a name that exists already is someone else's file, left alone.
  if (!durable) {
    const fd = openSync(tmp, "wx", mode);
    try {
      try {
        writeFileSync(fd, data);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // already renamed
      }
      throw err;
    }
    return;
  }
  const fh = await open(tmp, "wx", mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    // The rename itself must survive a crash: sync the directory entry too.
    const dir = await open(dirname(path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * A file too large to hold in memory (signtool's signed files), written under a temp name
 * beside `path` and mode 0600 while its bytes arrive, then renamed over `path` whole by
 * commit() or removed by discard(): a reader of `path` sees the old file or the whole new one,
 * and nobody else reads a part. Not fsynced, like writeFileAtomic's non-durable files.
 */
export class PendingFile {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    private readonly handle: FileHandle,
    private readonly finalMode: number,
  ) {}

  /** Creates the temp file; on commit `path` gets `mode` less the umask, as a new file would. */
  static async create(path: string, mode = 0o644): Promise<PendingFile> {
    const tempPath = tempNameFor(path);
    // Opened before the try: a name that exists already is someone else's file, left alone.
    const handle = await open(tempPath, "wx", mode);
    try {
      // The umask's share is read off the file while it is still empty; its bytes go in 0600.
      const finalMode = (await handle.stat()).mode & 0o777;
      await handle.chmod(0o600);
      return new PendingFile(path, tempPath, handle, finalMode);
    } catch (err) {
      await handle.close();
      await unlink(tempPath).catch(() => {});
      throw err;
    }
  }

  /** Appends `chunk` (all of it); the file stays this object's to close (commit, discard). */
  async write(chunk: Buffer): Promise<void> {
    for (let at = 0; at < chunk.length; ) at += (await this.handle.write(chunk, at)).bytesWritten;
  }

  /** Gives the file its mode and renames it over `path`. */
  async commit(): Promise<void> {
    await this.handle.chmod(this.finalMode);
    await this.close();
    await rename(this.tempPath, this.path);
  }

  /** Removes the temp file; `path` is left as it was. Never throws. */
  async discard(): Promise<void> {
    await this.close().catch(() => {});
    await unlink(this.tempPath).catch(() => {});
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}

/**
 * Copies `source` to `path` through a temp file and a rename, without reading it into memory
 * (the kernel copies it); the copy has the source's mode.
 */
export async function copyFileAtomic(source: string, path: string): Promise<void> {
  const tmp = tempNameFor(path);
  try {
    await copyFile(source, tmp, constants.COPYFILE_EXCL);
    await rename(tmp, path);
  } catch (err) {
    // A temp name that existed already is someone else's file, left alone.
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") await unlink(tmp).catch(() => {});
    throw err;
  }
}

import { randomBytes } from "node:crypto";
import { closeSync, openSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

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
  // A random name per call, not a counter: in a directory others can write to, a name they
  // could guess is one they could take first.
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
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

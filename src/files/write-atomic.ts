import { randomBytes } from "node:crypto";
import { renameSync, unlinkSync, writeFileSync } from "node:fs";
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
// Temp names unique to this process and call: a random tag drawn once and a counter. A
// randomBytes call per file would cost a getpid() system call (OpenSSL's fork check), 8 µs on
// the development VM.
const PROCESS_TAG = randomBytes(6).toString("hex");
let tmpFiles = 0;

export async function writeFileAtomic(
  path: string,
  data: Buffer | string,
  mode = 0o644,
  { durable = false } = {},
): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${PROCESS_TAG}${(tmpFiles++).toString(36)}.tmp`);
  if (!durable) {
    try {
      writeFileSync(tmp, data, { flag: "wx", mode });
      renameSync(tmp, path);
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // never created, or already renamed
      }
      throw err;
    }
    return;
  }
  try {
    const fh = await open(tmp, "wx", mode);
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

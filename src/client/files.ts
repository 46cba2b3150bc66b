import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Writes a file so that readers see the old content or the new one, never a part: a temp
 * file in the same directory, fsync, rename. A failure leaves nothing behind.
 */
export async function writeFileAtomic(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

export interface FileDigests {
  size: number;
  sha1: string;
  sha256: string;
}

/** Hashes a file as a stream (native crypto), sha1 for classic nodes and sha256 for ours. */
export async function hashFile(path: string): Promise<FileDigests> {
  const sha1 = createHash("sha1");
  const sha256 = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    sha1.update(chunk as Buffer);
    sha256.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha1: sha1.digest("hex"), sha256: sha256.digest("hex") };
}

import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";

export interface FileDigests {
  size: number;
  sha256: string;
  /** The running SHA-256, not digested: what a signature over the file is checked with. */
  hash: Hash;
}

/**
 * Hashes a file as a stream (native crypto). Only sha256: our nodes name results by it, and a
 * form whose sha256 comes before the file spares the node a sha1 pass over every byte.
 */
export async function hashFile(path: string): Promise<FileDigests> {
  const sha256 = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    sha256.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  const hash = sha256.copy();
  return { size, sha256: sha256.digest("hex"), hash };
}

/** A file hashed anew with `algorithm` (a signature over another hash than SHA-256). */
export async function rehashFile(path: string, algorithm: string): Promise<Hash> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash;
}

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

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

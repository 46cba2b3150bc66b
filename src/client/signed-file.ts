import { createHash } from "node:crypto";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PendingFile } from "../files/write-atomic.js";
import { ClientError } from "./errors.js";
import { TransportError } from "./http.js";
import type { OutputScan } from "./trusted-keys.js";

/** Where a signed file (an embedded format's output) goes, and what it must match on the way. */
export interface SignedFileTarget {
  /** The output path: the file is written beside it and renamed over it only once checked. */
  output: string;
  /** The mode it gets, less the umask (default 0644); --in-place passes the input's. */
  mode?: number;
  /** The format's check, fed every byte. */
  scan: OutputScan;
  /** The SHA-256 its sender named (`X-SHA256-Digest`), or the local cache's record of it. */
  sha256?: string;
  /** Who sends it, for messages: a node's URL, or the cache. */
  from: string;
  /** More than this is a misbehaving sender, not a signed file: it must not fill the disk. */
  maxBytes?: number;
}

/** A signed file checked and waiting beside its output, or why it was refused (and removed). */
export type ReceivedFile =
  | { file: PendingFile; sha256: string }
  | { refused: "digest"; why: string }
  | { refused: "signature"; why: string };

/**
 * Streams a signed file into a temp file beside its output (mode 0600), hashing and scanning
 * it on the way: the file is never held in memory. It is kept for the caller to rename into
 * place only if its SHA-256 is the one its sender named and the format's check passes;
 * otherwise, or when the stream or the disk fails, the temp file is removed and the output
 * is untouched. A broken stream is a TransportError (another node may do better); a write
 * that fails is LOCAL_IO.
 */
export async function receiveSignedFile(body: Readable, t: SignedFileTarget): Promise<ReceivedFile> {
  // Until the pipeline reads it, a body that fails (a dropped connection) must not throw unheard.
  const unheard = () => {};
  body.on("error", unheard);
  let file: PendingFile;
  try {
    file = await PendingFile.create(t.output, t.mode);
  } catch (err) {
    body.off("error", unheard);
    body.destroy();
    throw localIo(t.output, err);
  }
  let got: string;
  try {
    got = await streamInto(body, file, t);
  } catch (err) {
    await file.discard();
    throw err;
  } finally {
    body.off("error", unheard);
  }
  if (t.sha256 !== undefined && got !== t.sha256) {
    await file.discard();
    return { refused: "digest", why: `${t.from} sent a signed file that does not match its X-SHA256-Digest` };
  }
  const why = t.scan.result();
  if (why === undefined) return { file, sha256: got };
  await file.discard();
  return { refused: "signature", why };
}

/**
 * Pipes `body` into `file`, hashing and scanning each piece before it is written: the file's
 * SHA-256, or LOCAL_IO when the disk fails, or a TransportError when the body does.
 */
async function streamInto(body: Readable, file: PendingFile, t: SignedFileTarget): Promise<string> {
  const sha256 = createHash("sha256");
  let writeFailed: unknown;
  let received = 0;
  const checkAndWrite = new Writable({
    write(piece: Buffer, _enc, done) {
      received += piece.length;
      if (t.maxBytes !== undefined && received > t.maxBytes) {
        done(new TransportError("ETOOBIG", `${t.from} sent more than ${t.maxBytes} bytes for a signed file`));
        return;
      }
      sha256.update(piece);
      t.scan.update(piece);
      file.write(piece).then(
        () => done(),
        (err: unknown) => {
          writeFailed = err;
          done(err as Error);
        },
      );
    },
  });
  try {
    await pipeline(body, checkAndWrite);
  } catch (err) {
    if (writeFailed) throw localIo(t.output, writeFailed);
    if (err instanceof TransportError) throw err;
    throw new TransportError("ECONNRESET", `${t.from} broke off the signed file: ${(err as Error).message}`);
  }
  return sha256.digest("hex");
}

function localIo(output: string, err: unknown): ClientError {
  const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  return new ClientError("LOCAL_IO", `cannot write ${output}: ${reason}`);
}

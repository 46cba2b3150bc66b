import { readFile } from "node:fs/promises";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import * as openpgp from "openpgp";
import { type GpgKeyConfig, KeyLoadError, type Signer } from "../signer.js";

/** Reads an openpgp result that is either a string or a web stream of strings/bytes to the end. */
async function readArmored(result: unknown): Promise<string> {
  if (typeof result === "string") return result;
  const reader = (result as WebReadableStream<string | Uint8Array>).getReader();
  const parts: string[] = [];
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(typeof value === "string" ? value : decoder.decode(value, { stream: true }));
    }
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
  parts.push(decoder.decode());
  return parts.join("");
}

/** Reads a stream to its end, discarding the chunks: only pulling on it drives openpgp's hashing. */
async function drain(data: unknown): Promise<void> {
  if (data === null || data instanceof Uint8Array || typeof data === "string") return;
  const reader = (data as WebReadableStream<Uint8Array>).getReader();
  try {
    for (;;) {
      const { done } = await reader.read();
      if (done) return;
    }
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  } finally {
    reader.releaseLock();
  }
}

async function loadKey(cfg: GpgKeyConfig): Promise<openpgp.PrivateKey> {
  const fail = (reason: string): never => {
    throw new KeyLoadError("gpg", cfg.keyFile, reason);
  };
  let armored: string;
  try {
    armored = await readFile(cfg.keyFile, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return fail(code === "ENOENT" ? "file not found" : `cannot read file (${code ?? "error"})`);
  }
  let key: openpgp.PrivateKey;
  try {
    key = await openpgp.readPrivateKey({ armoredKey: armored });
  } catch (err) {
    return fail(`not an armored OpenPGP private key (${(err as Error).message})`);
  }
  if (key.isDecrypted()) return key;
  if (cfg.passphrase === undefined || cfg.passphrase === "") {
    return fail("the key is passphrase-protected but no passphrase was configured");
  }
  try {
    return await openpgp.decryptKey({ privateKey: key, passphrase: cfg.passphrase });
  } catch {
    // openpgp's message is not echoed: the reason must never risk carrying the passphrase.
    return fail("wrong passphrase, or the key cannot be decrypted");
  }
}

/** Loads and decrypts the OpenPGP key once; the signer produces armored detached signatures. */
export async function loadGpgSigner(cfg: GpgKeyConfig): Promise<Signer> {
  const key = await loadKey(cfg);
  const fingerprint = key.getFingerprint().toUpperCase();
  const publicArmored = key.toPublic().armor();

  return {
    format: "gpg",
    fingerprint,
    suffix: ".asc",
    publicKey: () => publicArmored,
    async sign(input: Readable | Uint8Array): Promise<Buffer> {
      if (input instanceof Uint8Array) {
        const message = await openpgp.createMessage({ binary: input });
        const armored = await openpgp.sign({ message, signingKeys: key, detached: true, format: "armored" });
        return Buffer.from(armored, "utf8");
      }
      // An input error must reject even if openpgp were to swallow it somewhere in its pipeline.
      let onError: ((err: Error) => void) | undefined;
      const inputFailed = new Promise<never>((_, reject) => {
        onError = reject;
        input.once("error", reject);
      });
      inputFailed.catch(() => {});
      try {
        const stream = Readable.toWeb(input) as WebReadableStream<Uint8Array>;
        const work = (async () => {
          const message = await openpgp.createMessage({ binary: stream });
          // Not format "armored": for a streamed message openpgp.sign then reads the whole message
          // into memory (readToEnd) to drive the hash. With format "object" we drive it ourselves,
          // discarding the literal data as it is hashed, so memory stays flat whatever the input size.
          const signature = (await openpgp.sign({
            message,
            signingKeys: key,
            detached: true,
            format: "object",
          })) as unknown as openpgp.Signature;
          const [armored] = await Promise.all([
            readArmored(signature.armor()),
            drain(message.getLiteralData()),
          ]);
          return armored;
        })();
        const armored = await Promise.race([work, inputFailed]);
        return Buffer.from(armored, "utf8");
      } catch (err) {
        if (!input.destroyed) input.destroy();
        throw err;
      } finally {
        if (onError) input.off("error", onError);
      }
    },
  };
}

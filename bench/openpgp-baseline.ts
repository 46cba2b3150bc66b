/**
 * openpgp.js signing in-process, as the node did before it hashed uploads natively: the
 * baseline issue 9 asks for ("openpgp.js in-process with no HTTP"). Bench-only.
 */
import { readFile } from "node:fs/promises";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import * as openpgp from "openpgp";

async function drain(stream: unknown): Promise<void> {
  if (stream === null || stream instanceof Uint8Array || typeof stream === "string") return;
  const reader = (stream as WebReadableStream<Uint8Array>).getReader();
  for (;;) if ((await reader.read()).done) return;
}

async function readAll(result: unknown): Promise<string> {
  if (typeof result === "string") return result;
  const parts: string[] = [];
  const reader = (result as WebReadableStream<string>).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return parts.join("");
    parts.push(value);
  }
}

export type OpenpgpJsSign = (input: Uint8Array | Readable) => Promise<string>;

/** Loads the key once; signs a buffer whole, or a stream without holding it (hash driven by a drain). */
export async function openpgpJsSigner(keyFile: string, passphrase: string): Promise<OpenpgpJsSign> {
  const privateKey = await openpgp.decryptKey({
    privateKey: await openpgp.readPrivateKey({ armoredKey: await readFile(keyFile, "utf8") }),
    passphrase,
  });
  return async (input) => {
    if (input instanceof Uint8Array) {
      const message = await openpgp.createMessage({ binary: input });
      return openpgp.sign({ message, signingKeys: privateKey, detached: true, format: "armored" });
    }
    const message = await openpgp.createMessage({
      binary: Readable.toWeb(input) as WebReadableStream<Uint8Array>,
    });
    const signature = (await openpgp.sign({
      message,
      signingKeys: privateKey,
      detached: true,
      format: "object",
    })) as unknown as openpgp.Signature;
    const [armored] = await Promise.all([readAll(signature.armor()), drain(message.getLiteralData())]);
    return armored;
  };
}

import { createPublicKey, type Hash, type KeyObject, verify } from "node:crypto";

/**
 * Checks minisign signatures (as `minisign -V` would) natively, against a pinned public key in
 * minisign's own format: the key id, the signature over the file (pre-hashed "ED" over its
 * BLAKE2b-512, or legacy "Ed" over the file itself), and the global signature over the
 * signature and the trusted comment. signtool checks what it downloads with it, `signing-admin
 * keys test` its probes.
 */

export interface MinisignVerifyingKey {
  keyId: Buffer;
  key: KeyObject;
}

/** The last base64 line of a minisign public key file (or the bare line `minisign -P` takes). */
export function minisignVerifyingKey(text: string): MinisignVerifyingKey {
  const lines = text.trim().split(/\r?\n/);
  const blob = Buffer.from(lines[lines.length - 1] ?? "", "base64");
  if (blob.length !== 42 || blob.subarray(0, 2).toString("latin1") !== "Ed")
    throw new Error("not a minisign Ed25519 public key");
  const x = blob.subarray(10).toString("base64url");
  return {
    keyId: blob.subarray(2, 10),
    key: createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" }),
  };
}

/** A `.minisig` file's parts, or why it is not one. */
function parseMinisig(text: string) {
  const lines = text.split("\n").map((l) => l.replace(/\r$/, ""));
  if (!lines[0]?.startsWith("untrusted comment: ")) return "not a minisign signature (no untrusted comment)";
  const sig = Buffer.from(lines[1] ?? "", "base64");
  const trusted = lines[2]?.startsWith("trusted comment: ") ? lines[2].slice(17) : undefined;
  const global = Buffer.from(lines[3] ?? "", "base64");
  if (sig.length !== 74 || trusted === undefined || global.length !== 64)
    return "not a minisign signature (malformed lines)";
  const algorithm = sig.subarray(0, 2).toString("latin1");
  if (algorithm !== "ED" && algorithm !== "Ed") return `signature algorithm ${algorithm} is not minisign's`;
  return {
    prehashed: algorithm === "ED",
    keyId: sig.subarray(2, 10),
    signature: sig.subarray(10),
    trusted,
    global,
  };
}

/**
 * Whether `text` is a valid minisign signature by `key` over the file that `rehash` hashes
 * anew ("blake2b512" for the pre-hashed mode). Returns why not, or undefined when it verifies.
 */
export async function checkMinisignSignature(
  text: string,
  key: MinisignVerifyingKey,
  rehash: (algorithm: string) => Promise<Hash>,
  whole: () => Promise<Buffer>,
): Promise<string | undefined> {
  const sig = parseMinisig(text);
  if (typeof sig === "string") return sig;
  if (!sig.keyId.equals(key.keyId)) return "it was made by another key (its key id is not the trusted key's)";
  const message = sig.prehashed ? (await rehash("blake2b512")).digest() : await whole();
  if (!verify(null, message, key.key, sig.signature)) return "it was not made over this file";
  const global = Buffer.concat([sig.signature, Buffer.from(sig.trusted)]);
  if (!verify(null, global, key.key, sig.global)) return "its trusted comment does not verify";
  return undefined;
}

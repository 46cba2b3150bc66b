/**
 * minisign (jedisct1/minisign) signatures and public keys, byte for byte as `minisign -S` and
 * `minisign -G` write them. Only the pre-hashed mode ("ED"): its signature covers BLAKE2b-512 of
 * the file, so an upload is hashed once while it arrives and never held whole. The trusted
 * comment (signed, shown by `minisign -V`) names the file and the time, as minisign's own does.
 */

import { createHash, type Hash, type KeyObject } from "node:crypto";
import { type RawSigningKey, requireAlgorithm } from "./raw-key.js";

export const MINISIGN_SUFFIX = ".minisig";

const SIG_ALG_PREHASHED = Buffer.from("ED");
const PUBKEY_ALG = Buffer.from("Ed");
const KEY_ID_BYTES = 8;
const UNTRUSTED_COMMENT = "untrusted comment: signature from signing-cluster";
/** minisign reads a trusted comment line into 8192 bytes, prefix and line ending included. */
const MAX_FILE_NAME_BYTES = 4096;

/** The running hash a minisign signature covers: feed it every byte of the file, in one pass. */
export function minisignHasher(): Hash {
  return createHash("blake2b512");
}

/** The 32 bytes of an Ed25519 public key. */
function ed25519PublicBytes(publicKey: KeyObject): Buffer {
  const { x } = publicKey.export({ format: "jwk" });
  return Buffer.from(x as string, "base64url");
}

/**
 * minisign's key id. minisign picks 8 random bytes when it makes a key; a key from a backend has
 * none, so it is derived from the public key, and every node holding the key agrees on it.
 */
export function minisignKeyId(publicKey: KeyObject): Buffer {
  return createHash("blake2b512").update(ed25519PublicBytes(publicKey)).digest().subarray(0, KEY_ID_BYTES);
}

/** The key id as minisign prints it: the 8 bytes read as a little-endian integer, in upper-case hex. */
export function minisignKeyIdHex(keyId: Uint8Array): string {
  return Buffer.from(keyId).reverse().toString("hex").toUpperCase();
}

/** The public key file `minisign -G` writes (for `/keys/minisign`, `minisign -V -p`). */
export function minisignPublicKey(key: Pick<RawSigningKey, "publicKey">, keyId?: Uint8Array): string {
  const id = keyId ?? minisignKeyId(key.publicKey);
  const blob = Buffer.concat([PUBKEY_ALG, id, ed25519PublicBytes(key.publicKey)]);
  return `untrusted comment: minisign public key ${minisignKeyIdHex(id)}\n${blob.toString("base64")}\n`;
}

/**
 * A file name as one trusted-comment field: minisign refuses control characters and tabs
 * separate the fields, so both become "_"; over-long names are cut on a character boundary.
 */
function commentSafeName(fileName: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are the point
  let name = fileName.replace(/[\u0000-\u001f\u007f]/g, "_");
  while (Buffer.byteLength(name) > MAX_FILE_NAME_BYTES) name = [...name].slice(0, -1).join("");
  return name;
}

/** Whether a `.minisig`'s trusted comment names `fileName` (as minisignTrustedComment writes it). */
export function minisigNamesFile(minisig: Buffer, fileName: string): boolean {
  const trusted = minisig.toString("utf8").split("\n")[2] ?? "";
  return (
    trusted.startsWith("trusted comment: timestamp:") &&
    trusted.endsWith(`\tfile:${commentSafeName(fileName)}\thashed`)
  );
}

/** Options of one minisign signature. */
export interface MinisignSignOptions {
  /** The name the trusted comment gives the file (its base name; the client's upload name). */
  fileName: string;
  /** The signing time in the trusted comment (default: now). */
  created?: Date;
  /** The key id (default: `minisignKeyId` of the public key); it must match the public key file's. */
  keyId?: Uint8Array;
}

/** The trusted comment minisign itself would write for a pre-hashed signature of `fileName`. */
export function minisignTrustedComment(fileName: string, created: Date): string {
  const seconds = Math.floor(created.getTime() / 1000);
  return `timestamp:${seconds}\tfile:${commentSafeName(fileName)}\thashed`;
}

/**
 * The `.minisig` file for a file whose BLAKE2b-512 digest is `fileDigest` (from
 * `minisignHasher`): the file signature, then the global signature over that signature and the
 * trusted comment.
 */
export async function signMinisign(
  key: RawSigningKey,
  fileDigest: Buffer,
  options: MinisignSignOptions,
): Promise<Buffer> {
  requireAlgorithm("minisign", key, ["ed25519"]);
  const keyId = options.keyId ?? minisignKeyId(key.publicKey);
  const trusted = minisignTrustedComment(options.fileName, options.created ?? new Date());
  const signature = await key.sign(fileDigest);
  const globalSignature = await key.sign(Buffer.concat([signature, Buffer.from(trusted)]));
  const sigLine = Buffer.concat([SIG_ALG_PREHASHED, keyId, signature]).toString("base64");
  const text = [
    UNTRUSTED_COMMENT,
    sigLine,
    `trusted comment: ${trusted}`,
    globalSignature.toString("base64"),
    "",
  ].join("\n");
  return Buffer.from(text);
}

import { createPublicKey, type Hash, type KeyObject, verify } from "node:crypto";
import { SshReader, sshString } from "../signing/openssh-key.js";

/**
 * Checks OpenSSH `SSHSIG` signatures (as `ssh-keygen -Y verify` would, for ed25519 keys)
 * natively, against a pinned public key line.
 */

const MAGIC = Buffer.from("SSHSIG", "latin1");

export interface SshVerifyingKey {
  /** The SSH wire-format public key: what an SSHSIG names as its signer. */
  blob: Buffer;
  key: KeyObject;
}

/** `ssh-ed25519 AAAA… comment` → the key that checks signatures. */
export function sshVerifyingKey(line: string): SshVerifyingKey {
  const [type, b64] = line.trim().split(/\s+/);
  if (type !== "ssh-ed25519" || !b64) throw new Error("not an ssh-ed25519 public key line");
  const blob = Buffer.from(b64, "base64");
  const r = new SshReader(blob, "public key");
  if (r.string() !== "ssh-ed25519") throw new Error("the key line's type and blob disagree");
  const pub = r.bytes();
  if (pub.length !== 32 || r.rest().length) throw new Error("not an ed25519 public key");
  const key = createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: pub.toString("base64url") },
    format: "jwk",
  });
  return { blob, key };
}

function dearmor(text: string): Buffer {
  const m = /-----BEGIN SSH SIGNATURE-----\r?\n([\s\S]*?)-----END SSH SIGNATURE-----/.exec(text);
  if (!m) throw new Error("not an armored SSH signature");
  const b64 = (m[1] as string).replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new Error("the armor is not base64");
  return Buffer.from(b64, "base64");
}

/**
 * Whether `armored` is a valid SSHSIG by `trusted` over the data whose running SHA-256 is
 * `data` (for sha512, `rehash` hashes the data anew). Returns why not, or undefined.
 */
export async function checkSshSignature(
  armored: string,
  trusted: SshVerifyingKey,
  data: Hash,
  rehash: (algorithm: string) => Promise<Hash>,
): Promise<string | undefined> {
  let parsed: { namespace: string; hashAlg: string; signature: Buffer };
  try {
    parsed = parse(dearmor(armored), trusted);
  } catch (err) {
    return (err as Error).message;
  }
  const { namespace, hashAlg, signature } = parsed;
  const digest = (hashAlg === "sha256" ? data.copy() : await rehash(hashAlg)).digest();
  const signed = Buffer.concat([
    MAGIC,
    sshString(namespace),
    sshString(""),
    sshString(hashAlg),
    sshString(digest),
  ]);
  return verify(null, signed, trusted.key, signature) ? undefined : "it does not verify with the trusted key";
}

/** The blob's fields (PROTOCOL.sshsig): magic, version 1, key, namespace, reserved, hash, signature. */
function parse(blob: Buffer, trusted: SshVerifyingKey) {
  if (!blob.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error("not an SSHSIG");
  const r = new SshReader(blob.subarray(MAGIC.length), "SSHSIG");
  if (r.uint32() !== 1) throw new Error("an SSHSIG version other than 1");
  if (!r.bytes().equals(trusted.blob)) throw new Error("it names another key than the trusted one");
  const namespace = r.string();
  r.bytes(); // reserved
  const hashAlg = r.string();
  if (hashAlg !== "sha256" && hashAlg !== "sha512")
    throw new Error(`hash ${hashAlg} is not sha256 or sha512`);
  const sig = new SshReader(r.bytes(), "signature");
  if (r.rest().length) throw new Error("unexpected bytes after the signature");
  if (sig.string() !== "ssh-ed25519") throw new Error("not an ed25519 signature");
  const signature = sig.bytes();
  if (signature.length !== 64 || sig.rest().length) throw new Error("not an ed25519 signature");
  return { namespace, hashAlg, signature };
}

import { createPublicKey, type Hash, type KeyObject, verify } from "node:crypto";
import { SshReader, sshString } from "./openssh-key.js";

/**
 * Checks OpenSSH `SSHSIG` signatures (as `ssh-keygen -Y verify` would) natively, against a
 * pinned public key line: Ed25519, ECDSA P-256 and RSA (rsa-sha2-256/512), the keys a node may
 * sign with. signtool checks what it downloads with it, `signing-admin keys test` its probes.
 */

const MAGIC = Buffer.from("SSHSIG", "latin1");

export interface SshVerifyingKey {
  /** The SSH wire-format public key: what an SSHSIG names as its signer. */
  blob: Buffer;
  /** ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa. */
  type: string;
  key: KeyObject;
}

const b64url = (b: Buffer) => b.toString("base64url");
/** An SSH mpint as unsigned big-endian bytes (its sign byte dropped). */
const unsigned = (b: Buffer) => (b[0] === 0 ? b.subarray(1) : b);

function publicKeyOf(type: string, r: SshReader): KeyObject {
  switch (type) {
    case "ssh-ed25519": {
      const pub = r.bytes();
      if (pub.length !== 32) throw new Error("not an ed25519 public key");
      return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64url(pub) }, format: "jwk" });
    }
    case "ecdsa-sha2-nistp256": {
      if (r.string() !== "nistp256") throw new Error("the key line's curve is not nistp256");
      const q = r.bytes();
      if (q.length !== 65 || q[0] !== 4) throw new Error("not an uncompressed P-256 point");
      const jwk = { kty: "EC", crv: "P-256", x: b64url(q.subarray(1, 33)), y: b64url(q.subarray(33)) };
      return createPublicKey({ key: jwk, format: "jwk" });
    }
    case "ssh-rsa": {
      const e = unsigned(r.bytes());
      const n = unsigned(r.bytes());
      return createPublicKey({ key: { kty: "RSA", n: b64url(n), e: b64url(e) }, format: "jwk" });
    }
    default:
      throw new Error(`a ${type} key (checked: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa)`);
  }
}

/** `ssh-ed25519 AAAA… comment` (or ecdsa-sha2-nistp256, ssh-rsa) → the key that checks signatures. */
export function sshVerifyingKey(line: string): SshVerifyingKey {
  const [type, b64] = line.trim().split(/\s+/);
  if (!type || !b64) throw new Error("not an OpenSSH public key line");
  const blob = Buffer.from(b64, "base64");
  const r = new SshReader(blob, "public key");
  if (r.string() !== type) throw new Error("the key line's type and blob disagree");
  const key = publicKeyOf(type, r);
  if (r.rest().length) throw new Error("unexpected bytes after the public key");
  return { blob, type, key };
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
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(dearmor(armored), trusted);
  } catch (err) {
    return (err as Error).message;
  }
  const { namespace, hashAlg, check } = parsed;
  const digest = (hashAlg === "sha256" ? data.copy() : await rehash(hashAlg)).digest();
  const signed = Buffer.concat([
    MAGIC,
    sshString(namespace),
    sshString(""),
    sshString(hashAlg),
    sshString(digest),
  ]);
  return check(signed) ? undefined : "it does not verify with the trusted key";
}

/** The check of one signature blob (type and bytes) by `trusted`, or why it cannot be one. */
function signatureCheck(sig: SshReader, trusted: SshVerifyingKey): (signed: Buffer) => boolean {
  const type = sig.string();
  const bytes = sig.bytes();
  if (sig.rest().length) throw new Error("unexpected bytes after the signature");
  const { key } = trusted;
  if (trusted.type === "ssh-ed25519" && type === "ssh-ed25519") {
    if (bytes.length !== 64) throw new Error("not an ed25519 signature");
    return (signed) => verify(null, signed, key, bytes);
  }
  if (trusted.type === "ecdsa-sha2-nistp256" && type === "ecdsa-sha2-nistp256") {
    const rs = new SshReader(bytes, "ECDSA signature");
    const [r, s] = [unsigned(rs.bytes()), unsigned(rs.bytes())];
    if (r.length > 32 || s.length > 32 || rs.rest().length) throw new Error("not a P-256 signature");
    const p1363 = Buffer.concat([Buffer.alloc(32 - r.length), r, Buffer.alloc(32 - s.length), s]);
    return (signed) => verify("sha256", signed, { key, dsaEncoding: "ieee-p1363" }, p1363);
  }
  if (trusted.type === "ssh-rsa" && (type === "rsa-sha2-256" || type === "rsa-sha2-512"))
    return (signed) => verify(type === "rsa-sha2-256" ? "sha256" : "sha512", signed, key, bytes);
  throw new Error(`a ${type} signature, not one by the trusted ${trusted.type} key`);
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
  const check = signatureCheck(new SshReader(r.bytes(), "signature"), trusted);
  if (r.rest().length) throw new Error("unexpected bytes after the signature");
  return { namespace, hashAlg, check };
}

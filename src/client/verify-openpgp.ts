import {
  constants,
  createHash,
  createPublicKey,
  type Hash,
  type KeyObject,
  publicDecrypt,
  verify,
} from "node:crypto";
import * as openpgp from "openpgp";
import {
  OID_P256,
  PUBKEY_ECDSA,
  PUBKEY_ED25519,
  PUBKEY_EDDSA_LEGACY,
  PUBKEY_RSA_ENCRYPT_SIGN,
  PUBKEY_RSA_SIGN,
  SHA256_DIGEST_INFO,
} from "../signing/openpgp-packet.js";
import { verifyP256Digest } from "./ecdsa-p256.js";

/**
 * Checks OpenPGP v4 detached signatures natively, against a pinned public key: the client
 * already holds the input's running SHA-256 (it hashed the file to upload it), so checking a
 * signature costs one public-key operation. openpgp.js only parses the public key, once.
 * Every algorithm a node signs with is checked (EdDSA, Ed25519, ECDSA P-256, RSA); a signature
 * of any other is named and refused, never taken on trust.
 */

/** One key that may make the signatures: the primary key or a signing subkey. */
export interface VerifyingKey {
  keyId: string;
  algorithm: number;
  key: KeyObject;
}

/** The hash algorithms OpenPGP names by number, as node calls them. */
const HASHES: Record<number, string> = { 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224" };
const DIGEST_INFO_PREFIX: Record<string, Buffer> = {
  sha256: SHA256_DIGEST_INFO,
  sha384: Buffer.from("3041300d060960864801650304020205000430", "hex"),
  sha512: Buffer.from("3051300d060960864801650304020305000440", "hex"),
  sha224: Buffer.from("302d300d06096086480165030402040500041c", "hex"),
};

/** Names of public-key algorithms (RFC 9580 §9.1), for messages. */
const ALGORITHM_NAMES: Record<number, string> = {
  [PUBKEY_RSA_ENCRYPT_SIGN]: "RSA",
  [PUBKEY_RSA_SIGN]: "RSA",
  16: "Elgamal",
  17: "DSA",
  18: "ECDH",
  [PUBKEY_ECDSA]: "ECDSA",
  [PUBKEY_EDDSA_LEGACY]: "EdDSA",
  [PUBKEY_ED25519]: "Ed25519",
  28: "Ed448",
};
/** What this client checks: whatever a node can sign with. */
const CHECKED = "Ed25519, EdDSA, ECDSA P-256 or RSA";
const CHECKABLE = new Set([
  PUBKEY_RSA_ENCRYPT_SIGN,
  PUBKEY_RSA_SIGN,
  PUBKEY_ECDSA,
  PUBKEY_EDDSA_LEGACY,
  PUBKEY_ED25519,
]);
const algorithmName = (n: number) => `${ALGORITHM_NAMES[n] ?? "unknown"} (public-key algorithm ${n})`;

function describeKey(packet: KeyPacket): string {
  const oid = (packet.publicParams as { oid?: { toHex?(): string } }).oid;
  const name = algorithmName(packet.algorithm as number);
  return oid?.toHex ? `${name} on curve OID ${oid.toHex()}` : name;
}

const b64 = (v: Uint8Array | undefined) => Buffer.from(v ?? []).toString("base64url");
const jwkOkp = (x: Uint8Array) =>
  createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64(x) }, format: "jwk" });

/** An ECDSA key (RFC 6637 §9): the curve's OID, and Q as the uncompressed point 0x04‖X‖Y. */
function p256Key(oid: Uint8Array | undefined, q: Uint8Array | undefined): KeyObject | undefined {
  if (!oid || !Buffer.from(oid).equals(OID_P256) || q?.length !== 65 || q[0] !== 4) return undefined;
  const jwk = { kty: "EC", crv: "P-256", x: b64(q.subarray(1, 33)), y: b64(q.subarray(33)) };
  return createPublicKey({ key: jwk, format: "jwk" });
}

type KeyPacket = { publicParams: object; algorithm: unknown };

function keyObject(packet: KeyPacket): KeyObject | undefined {
  const pub = packet.publicParams as Record<string, Uint8Array>;
  switch (packet.algorithm as number) {
    case PUBKEY_EDDSA_LEGACY:
      // Q is 0x40 followed by the 32-byte Ed25519 public key.
      return pub.Q?.length === 33 && pub.Q[0] === 0x40 ? jwkOkp(pub.Q.subarray(1)) : undefined;
    case PUBKEY_ED25519:
      return pub.A ? jwkOkp(pub.A) : undefined;
    case PUBKEY_ECDSA:
      // openpgp.js reads the curve as an OID object holding its bytes.
      return p256Key((packet.publicParams as { oid?: { oid?: Uint8Array } }).oid?.oid, pub.Q);
    case PUBKEY_RSA_ENCRYPT_SIGN:
    case PUBKEY_RSA_SIGN:
      return createPublicKey({ key: { kty: "RSA", n: b64(pub.n), e: b64(pub.e) }, format: "jwk" });
    default:
      return undefined;
  }
}

/** The keys of an armored OpenPGP public key that can check signatures. */
export async function openpgpVerifyingKeys(armoredKey: string): Promise<VerifyingKey[]> {
  const key = await openpgp.readKey({ armoredKey });
  const packets = [key.keyPacket, ...key.getSubkeys().map((s) => s.keyPacket)];
  const out: VerifyingKey[] = [];
  for (const packet of packets) {
    const k = keyObject(packet);
    if (k) out.push({ keyId: packet.getKeyID().toHex(), algorithm: packet.algorithm as number, key: k });
  }
  if (!out.length)
    throw new Error(
      `the key has no ${CHECKED} key that could check a signature (it has: ${packets.map(describeKey).join(", ")})`,
    );
  return out;
}

/** Reads the armor and the one signature packet in it. */
interface SignaturePacket {
  algorithm: number;
  hash: string;
  /** The hashed part (version to hashed subpackets), hashed after the data with the trailer. */
  hashed: Buffer;
  issuerKeyIds: string[];
  left16: Buffer;
  /** The algorithm-specific fields: MPIs, or 64 raw bytes for Ed25519 (RFC 9580). */
  fields: Buffer;
}

function dearmor(text: string): Buffer {
  const m = /-----BEGIN PGP SIGNATURE-----\r?\n([\s\S]*?)-----END PGP SIGNATURE-----/.exec(text);
  if (!m) throw new Error("not an armored OpenPGP signature");
  const lines = (m[1] as string).split(/\r?\n/);
  const blank = lines.findIndex((l) => l.trim() === "");
  const body = lines.slice(blank + 1).filter((l) => l.trim() !== "" && !l.startsWith("="));
  const b64 = body.join("");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new Error("the armor is not base64");
  return Buffer.from(b64, "base64");
}

function packetBody(bytes: Buffer): Buffer {
  const first = bytes[0] ?? 0;
  if (!(first & 0x80)) throw new Error("not an OpenPGP packet");
  let tag: number;
  let start: number;
  let length: number;
  if (first & 0x40) {
    tag = first & 0x3f;
    const l0 = bytes[1] ?? 0;
    if (l0 < 192) [start, length] = [2, l0];
    else if (l0 < 224) [start, length] = [3, ((l0 - 192) << 8) + (bytes[2] ?? 0) + 192];
    else if (l0 === 255) [start, length] = [6, bytes.readUInt32BE(2)];
    else throw new Error("a partial-length signature packet");
  } else {
    tag = (first >> 2) & 0x0f;
    const type = first & 3;
    if (type === 0) [start, length] = [2, bytes[1] ?? 0];
    else if (type === 1) [start, length] = [3, bytes.readUInt16BE(1)];
    else if (type === 2) [start, length] = [5, bytes.readUInt32BE(1)];
    else throw new Error("an indeterminate-length packet");
  }
  if (tag !== 2) throw new Error(`packet ${tag} is not a signature`);
  if (start + length !== bytes.length) throw new Error("not exactly one signature packet");
  return bytes.subarray(start, start + length);
}

/** The issuer key IDs named in a subpacket area (issuer 16, issuer fingerprint 33). */
function issuers(area: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i < area.length; ) {
    const l0 = area[i] as number;
    let len: number;
    if (l0 < 192) [len, i] = [l0, i + 1];
    else if (l0 < 255) [len, i] = [((l0 - 192) << 8) + (area[i + 1] as number) + 192, i + 2];
    else [len, i] = [area.readUInt32BE(i + 1), i + 5];
    const type = (area[i] as number) & 0x7f;
    const data = area.subarray(i + 1, i + len);
    if (type === 16) out.push(data.toString("hex"));
    if (type === 33 && data[0] === 4) out.push(data.subarray(-8).toString("hex"));
    i += len;
  }
  return out;
}

/** The signature types checked here: of a binary document, or of a canonical text (clearsigned). */
const SIG_TYPE_NAMES: Record<number, string> = { 0: "a binary document", 1: "a canonical text" };

function parseSignature(text: string, sigType: 0 | 1): SignaturePacket {
  const body = packetBody(dearmor(text));
  if (body[0] !== 4) throw new Error(`a v${body[0]} signature (only v4 is checked)`);
  if (body[1] !== sigType)
    throw new Error(`signature type ${body[1]} is not a signature of ${SIG_TYPE_NAMES[sigType]}`);
  const hashedLen = body.readUInt16BE(4);
  const hashedEnd = 6 + hashedLen;
  const unhashedLen = body.readUInt16BE(hashedEnd);
  const unhashedEnd = hashedEnd + 2 + unhashedLen;
  const hash = HASHES[body[3] as number];
  if (!hash) throw new Error(`hash algorithm ${body[3]} is not one this client checks`);
  return {
    algorithm: body[2] as number,
    hash,
    hashed: body.subarray(0, hashedEnd),
    issuerKeyIds: [
      ...issuers(body.subarray(6, hashedEnd)),
      ...issuers(body.subarray(hashedEnd + 2, unhashedEnd)),
    ],
    left16: body.subarray(unhashedEnd, unhashedEnd + 2),
    fields: body.subarray(unhashedEnd + 2),
  };
}

/** MPIs one after another → their values. */
function mpis(fields: Buffer, count: number): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  for (let n = 0; n < count; n++) {
    const bits = fields.readUInt16BE(i);
    const len = Math.ceil(bits / 8);
    out.push(fields.subarray(i + 2, i + 2 + len));
    i += 2 + len;
  }
  if (i !== fields.length) throw new Error("unexpected bytes after the signature");
  return out;
}

const leftPad = (b: Buffer, size: number) => Buffer.concat([Buffer.alloc(Math.max(0, size - b.length)), b]);

/** Two MPIs r and s (EdDSA, ECDSA) as the 64 bytes r‖s, or undefined when either is too long. */
function rs64(fields: Buffer): Buffer | undefined {
  const [r, s] = mpis(fields, 2) as [Buffer, Buffer];
  return r.length <= 32 && s.length <= 32 ? Buffer.concat([leftPad(r, 32), leftPad(s, 32)]) : undefined;
}

function checkWith(k: VerifyingKey, sig: SignaturePacket, digest: Buffer): boolean {
  switch (sig.algorithm) {
    case PUBKEY_EDDSA_LEGACY: {
      const rs = rs64(sig.fields);
      return rs !== undefined && verify(null, digest, k.key, rs);
    }
    case PUBKEY_ECDSA: {
      const rs = rs64(sig.fields);
      return rs !== undefined && verifyP256Digest(k.key, digest, rs);
    }
    case PUBKEY_ED25519:
      return sig.fields.length === 64 && verify(null, digest, k.key, sig.fields);
    case PUBKEY_RSA_ENCRYPT_SIGN:
    case PUBKEY_RSA_SIGN: {
      const [s] = mpis(sig.fields, 1) as [Buffer];
      // PKCS#1 v1.5: the type-1 padded DigestInfo, which publicDecrypt checks and strips.
      const size = ((k.key.asymmetricKeyDetails?.modulusLength ?? 0) + 7) >> 3;
      const recovered = publicDecrypt({ key: k.key, padding: constants.RSA_PKCS1_PADDING }, leftPad(s, size));
      return recovered.equals(Buffer.concat([DIGEST_INFO_PREFIX[sig.hash] as Buffer, digest]));
    }
    default:
      return false;
  }
}

/**
 * Whether `armored` is a valid signature by one of `keys` over the data whose running hash is
 * `data` (a SHA-256 not yet digested; for another algorithm, `rehash` hashes the data anew),
 * of type `sigType` (0: binary, the default; 1: canonical text, as a cleartext signature is).
 * Returns why not, or undefined when it verifies.
 */
export async function checkOpenpgpSignature(
  armored: string,
  keys: readonly VerifyingKey[],
  data: Hash,
  rehash: (algorithm: string) => Promise<Hash>,
  sigType: 0 | 1 = 0,
): Promise<string | undefined> {
  let sig: SignaturePacket;
  try {
    sig = parseSignature(armored, sigType);
  } catch (err) {
    return (err as Error).message;
  }
  const hash = sig.hash === "sha256" ? data.copy() : await rehash(sig.hash);
  const trailer = Buffer.alloc(6);
  trailer[0] = 4;
  trailer[1] = 0xff;
  trailer.writeUInt32BE(sig.hashed.length, 2);
  const digest = hash.update(sig.hashed).update(trailer).digest();
  if (!digest.subarray(0, 2).equals(sig.left16)) return "it was not made over this file";
  const named = keys.filter((k) => sig.issuerKeyIds.includes(k.keyId));
  const candidates = (named.length ? named : keys).filter((k) => sameAlgorithm(k.algorithm, sig.algorithm));
  for (const k of candidates) {
    try {
      if (checkWith(k, sig, digest)) return undefined;
    } catch {
      // a malformed signature field: not a valid signature
    }
  }
  return candidates.length ? "it does not verify with the trusted key" : wrongAlgorithm(sig.algorithm, keys);
}

const isRsa = (a: number) => a === PUBKEY_RSA_ENCRYPT_SIGN || a === PUBKEY_RSA_SIGN;
const sameAlgorithm = (a: number, b: number) => a === b || (isRsa(a) && isRsa(b));

/** Why no trusted key can have made a signature of this algorithm, naming it. */
function wrongAlgorithm(algorithm: number, keys: readonly VerifyingKey[]): string {
  const made = `the signature's algorithm is ${algorithmName(algorithm)}`;
  if (!CHECKABLE.has(algorithm)) return `${made}: this client checks only ${CHECKED} signatures`;
  const trusted = [...new Set(keys.map((k) => algorithmName(k.algorithm)))].join(", ");
  return `${made}, the trusted key's ${trusted}: it does not verify with the trusted key`;
}

/** A SHA-256 running hash of `bytes`, for callers holding the data itself. */
export const sha256Of = (bytes: Buffer): Hash => createHash("sha256").update(bytes);

/**
 * The few OpenPGP encodings (RFC 4880 / RFC 9580) a v4 detached signature needs. They are
 * written here rather than through openpgp.js because openpgp.js hashes the input itself; the
 * node hashes every upload once, natively, while it arrives, and signs that running hash.
 */

import { createHash } from "node:crypto";
import type { PublicParts } from "../keys/public-parts.js";
import { wrapBase64 } from "./openssh-key.js";

export const SIG_VERSION = 4;
export const SIG_TYPE_BINARY = 0x00;
/** A signature over canonical text (CRLF line endings): what a cleartext signature carries. */
export const SIG_TYPE_TEXT = 0x01;
/** A positive certification of a user ID: the self-signature that binds it to the key. */
export const SIG_TYPE_POSITIVE_CERTIFICATION = 0x13;
export const HASH_SHA256 = 8;

export const PUBKEY_RSA_ENCRYPT_SIGN = 1;
export const PUBKEY_RSA_SIGN = 3;
export const PUBKEY_ECDSA = 19;
export const PUBKEY_EDDSA_LEGACY = 22;
export const PUBKEY_ED25519 = 27;

const SUBPACKET_CREATION_TIME = 2;
const SUBPACKET_ISSUER_KEY_ID = 16;
const SUBPACKET_ISSUER_FINGERPRINT = 33;
const SUBPACKET_KEY_FLAGS = 27;
const SUBPACKET_PREFERRED_HASH = 21;
const KEY_FLAGS_CERTIFY_SIGN = 0x03;
const PACKET_TAG_SIGNATURE = 2;
const PACKET_TAG_PUBLIC_KEY = 6;
const PACKET_TAG_USER_ID = 13;

/** Curve OIDs (RFC 9580 §9.2) without their DER tag and length, as OpenPGP writes them. */
const OID_ED25519 = Buffer.from("2b06010401da470f01", "hex");
export const OID_P256 = Buffer.from("2a8648ce3d030107", "hex");

export { SHA256_DIGEST_INFO } from "../keys/rsa.js";

/** A multiprecision integer: bit count, then the big-endian value without leading zeros. */
export function mpi(value: Uint8Array): Buffer {
  let start = 0;
  while (start < value.length && value[start] === 0) start++;
  const bytes = Buffer.from(value.subarray(start));
  const bits = bytes.length === 0 ? 0 : (bytes.length - 1) * 8 + (32 - Math.clz32(bytes[0] as number));
  const head = Buffer.alloc(2);
  head.writeUInt16BE(bits);
  return Buffer.concat([head, bytes]);
}

function subpacket(type: number, body: Uint8Array): Buffer {
  // Every subpacket here is far below 192 bytes: one length octet (type included).
  return Buffer.concat([Buffer.from([body.length + 1, type]), body]);
}

function withLength16(body: Buffer): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(body.length);
  return Buffer.concat([head, body]);
}

export interface SignatureParams {
  pubkeyAlgorithm: number;
  /** The v4 fingerprint (20 bytes) of the key that signs: the primary key or a signing subkey. */
  fingerprint: Uint8Array;
  /** Its key ID: the fingerprint's last 8 bytes. */
  keyId: Uint8Array;
  created: Date;
  /** SIG_TYPE_BINARY unless given. */
  sigType?: number;
  /** More hashed subpackets (a certification's key flags). */
  extraSubpackets?: Buffer;
}

/** Everything of a v4 signature that is hashed after the data: the hashed fields, then the trailer. */
export function hashedSuffix(p: SignatureParams): { hashedFields: Buffer; trailer: Buffer } {
  const time = Buffer.alloc(4);
  time.writeUInt32BE(Math.floor(p.created.getTime() / 1000));
  const hashedSubpackets = Buffer.concat([
    subpacket(SUBPACKET_CREATION_TIME, time),
    subpacket(SUBPACKET_ISSUER_FINGERPRINT, Buffer.concat([Buffer.from([SIG_VERSION]), p.fingerprint])),
    p.extraSubpackets ?? Buffer.alloc(0),
  ]);
  const hashedFields = Buffer.concat([
    Buffer.from([SIG_VERSION, p.sigType ?? SIG_TYPE_BINARY, p.pubkeyAlgorithm, HASH_SHA256]),
    withLength16(hashedSubpackets),
  ]);
  const trailer = Buffer.alloc(6);
  trailer[0] = SIG_VERSION;
  trailer[1] = 0xff;
  trailer.writeUInt32BE(hashedFields.length, 2);
  return { hashedFields, trailer };
}

/** The binary signature packet: hashed fields, issuer key ID (unhashed), hash prefix, signature. */
export function signaturePacket(
  p: SignatureParams,
  hashedFields: Buffer,
  digest: Buffer,
  signatureFields: Buffer,
): Buffer {
  const unhashed = withLength16(subpacket(SUBPACKET_ISSUER_KEY_ID, p.keyId));
  const body = Buffer.concat([hashedFields, unhashed, digest.subarray(0, 2), signatureFields]);
  return Buffer.concat([packetHeader(PACKET_TAG_SIGNATURE, body.length), body]);
}

/** A new-format packet header (RFC 4880 §4.2.2). */
export function packetHeader(tag: number, length: number): Buffer {
  const first = 0xc0 | tag;
  if (length < 192) return Buffer.from([first, length]);
  if (length < 8384) {
    const l = length - 192;
    return Buffer.from([first, (l >> 8) + 192, l & 0xff]);
  }
  const out = Buffer.alloc(6);
  out[0] = first;
  out[1] = 0xff;
  out.writeUInt32BE(length, 2);
  return out;
}

/** CRC-24 of RFC 4880 §6.1, the armor checksum. */
function crc24(data: Uint8Array): number {
  let crc = 0xb704ce;
  for (const byte of data) {
    crc ^= byte << 16;
    for (let i = 0; i < 8; i++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= 0x1864cfb;
    }
  }
  return crc & 0xffffff;
}

/**
 * The ASCII armor of a signature packet, byte for byte as `openpgp.armor` writes it (60-column
 * base64, a blank header, the CRC-24 line), with node's base64: openpgp.js's armor, a stream
 * transform in JavaScript, was 2 % of a node's CPU at 32 small-file clients. The CRC-24 line is
 * kept: without it gpg 2.2/2.4 cannot read armor whose base64 ends without '=' padding (GnuPG
 * T7071), one signature in ~25 000.
 */
export function armorSignature(packet: Uint8Array): string {
  return armor("SIGNATURE", packet);
}

function armor(kind: "SIGNATURE" | "PUBLIC KEY BLOCK", packets: Uint8Array): string {
  const base64 = Buffer.from(packets.buffer, packets.byteOffset, packets.byteLength).toString("base64");
  const body = base64 ? `${wrapBase64(base64, 60)}\n` : "";
  const crc = crc24(packets);
  const checksum = Buffer.from([crc >> 16, (crc >> 8) & 0xff, crc & 0xff]).toString("base64");
  return `-----BEGIN PGP ${kind}-----\n\n${body}=${checksum}\n-----END PGP ${kind}-----\n`;
}

/** The OpenPGP public-key algorithm and fields of a public key: legacy EdDSA, ECDSA or RSA. */
function publicKeyFields(parts: PublicParts): { algorithm: number; fields: Buffer } {
  const oid = (o: Buffer) => Buffer.concat([Buffer.from([o.length]), o]);
  switch (parts.algorithm) {
    case "ed25519":
      // Legacy EdDSA (22), not v4 Ed25519 (27): gpg 2.2 reads only the former. Q = 0x40 ‖ key.
      return {
        algorithm: PUBKEY_EDDSA_LEGACY,
        fields: Buffer.concat([oid(OID_ED25519), mpi(Buffer.concat([Buffer.from([0x40]), parts.point]))]),
      };
    case "ecdsa-p256":
      return { algorithm: PUBKEY_ECDSA, fields: Buffer.concat([oid(OID_P256), mpi(parts.point)]) };
    case "rsa-pkcs1-sha256":
      return { algorithm: PUBKEY_RSA_SIGN, fields: Buffer.concat([mpi(parts.n), mpi(parts.e)]) };
  }
}

/** The signature fields of a raw signature: two MPIs r and s for (Ed)DSA, one MPI for RSA. */
export function signatureFields(pubkeyAlgorithm: number, raw: Buffer): Buffer {
  switch (pubkeyAlgorithm) {
    case PUBKEY_EDDSA_LEGACY:
    case PUBKEY_ECDSA:
      return Buffer.concat([mpi(raw.subarray(0, raw.length / 2)), mpi(raw.subarray(raw.length / 2))]);
    case PUBKEY_ED25519:
      return raw;
    default:
      return mpi(raw);
  }
}

/** A v4 public key: its packet body (what the fingerprint hashes), algorithm and fingerprint. */
export interface V4PublicKey {
  body: Buffer;
  algorithm: number;
  fingerprint: Buffer;
}

export function v4PublicKey(parts: PublicParts, created: Date): V4PublicKey {
  const time = Buffer.alloc(4);
  time.writeUInt32BE(Math.floor(created.getTime() / 1000));
  const { algorithm, fields } = publicKeyFields(parts);
  const body = Buffer.concat([Buffer.from([4]), time, Buffer.from([algorithm]), fields]);
  const fingerprint = createHash("sha1").update(keyHashPrefix(body)).update(body).digest();
  return { body, algorithm, fingerprint };
}

function keyHashPrefix(body: Buffer): Buffer {
  const head = Buffer.from([0x99, 0, 0]);
  head.writeUInt16BE(body.length, 1);
  return head;
}

/**
 * The transferable public key (public key packet, user ID, self-signature) of a key whose
 * private half signs elsewhere: `signDigest` turns the certification's SHA-256 digest into
 * the signature's algorithm-specific fields. gpg imports only a key whose user ID is certified.
 */
export async function armoredPublicKey(
  key: V4PublicKey,
  userId: string,
  created: Date,
  signDigest: (digest: Buffer) => Promise<Buffer>,
): Promise<string> {
  const uid = Buffer.from(userId, "utf8");
  const uidLength = Buffer.alloc(4);
  uidLength.writeUInt32BE(uid.length);
  const params: SignatureParams = {
    pubkeyAlgorithm: key.algorithm,
    fingerprint: key.fingerprint,
    keyId: key.fingerprint.subarray(12),
    created,
    sigType: SIG_TYPE_POSITIVE_CERTIFICATION,
    extraSubpackets: Buffer.concat([
      subpacket(SUBPACKET_KEY_FLAGS, Buffer.from([KEY_FLAGS_CERTIFY_SIGN])),
      subpacket(SUBPACKET_PREFERRED_HASH, Buffer.from([HASH_SHA256])),
    ]),
  };
  const { hashedFields, trailer } = hashedSuffix(params);
  const digest = createHash("sha256")
    .update(keyHashPrefix(key.body))
    .update(key.body)
    .update(Buffer.from([0xb4]))
    .update(uidLength)
    .update(uid)
    .update(hashedFields)
    .update(trailer)
    .digest();
  const certification = signaturePacket(params, hashedFields, digest, await signDigest(digest));
  const packets = Buffer.concat([
    packetHeader(PACKET_TAG_PUBLIC_KEY, key.body.length),
    key.body,
    packetHeader(PACKET_TAG_USER_ID, uid.length),
    uid,
    certification,
  ]);
  return armor("PUBLIC KEY BLOCK", packets);
}

/**
 * The few OpenPGP encodings (RFC 4880 / RFC 9580) a v4 detached signature needs. They are
 * written here rather than through openpgp.js because openpgp.js hashes the input itself; the
 * node hashes every upload once, natively, while it arrives, and signs that running hash.
 */

import { wrapBase64 } from "./openssh-key.js";

export const SIG_VERSION = 4;
export const SIG_TYPE_BINARY = 0x00;
/** A signature over canonical text (CRLF line endings): what a cleartext signature carries. */
export const SIG_TYPE_TEXT = 0x01;
export const HASH_SHA256 = 8;

export const PUBKEY_RSA_ENCRYPT_SIGN = 1;
export const PUBKEY_RSA_SIGN = 3;
export const PUBKEY_EDDSA_LEGACY = 22;
export const PUBKEY_ED25519 = 27;

const SUBPACKET_CREATION_TIME = 2;
const SUBPACKET_ISSUER_KEY_ID = 16;
const SUBPACKET_ISSUER_FINGERPRINT = 33;
const PACKET_TAG_SIGNATURE = 2;

/** DER prefix of the PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2). */
export const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

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
  /** The signature type (default: `SIG_TYPE_BINARY`, a detached signature of the bytes). */
  sigType?: number;
}

/** Everything of a v4 signature that is hashed after the data: the hashed fields, then the trailer. */
export function hashedSuffix(p: SignatureParams): { hashedFields: Buffer; trailer: Buffer } {
  const time = Buffer.alloc(4);
  time.writeUInt32BE(Math.floor(p.created.getTime() / 1000));
  const hashedSubpackets = Buffer.concat([
    subpacket(SUBPACKET_CREATION_TIME, time),
    subpacket(SUBPACKET_ISSUER_FINGERPRINT, Buffer.concat([Buffer.from([SIG_VERSION]), p.fingerprint])),
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
function packetHeader(tag: number, length: number): Buffer {
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
  const base64 = Buffer.from(packet.buffer, packet.byteOffset, packet.byteLength).toString("base64");
  const body = base64 ? `${wrapBase64(base64, 60)}\n` : "";
  const crc = crc24(packet);
  const checksum = Buffer.from([crc >> 16, (crc >> 8) & 0xff, crc & 0xff]).toString("base64");
  return `-----BEGIN PGP SIGNATURE-----\n\n${body}=${checksum}\n-----END PGP SIGNATURE-----\n`;
}

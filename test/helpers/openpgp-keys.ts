import {
  constants,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  privateEncrypt,
  sign,
} from "node:crypto";
import * as openpgp from "openpgp";
import type { OpenPgpKeyIdentity } from "../../src/signing/formats/openpgp-signature.js";
import type { RawSigningKey } from "../../src/signing/formats/raw-key.js";
import { SHA256_DIGEST_INFO } from "../../src/signing/openpgp-packet.js";

/** An OpenPGP key made by openpgp.js, as a raw key plus what gpg needs to know it. */
export interface OpenPgpTestKey {
  key: RawSigningKey;
  identity: OpenPgpKeyIdentity;
  publicArmored: string;
  /** Unprotected, for `gpg --import` when a test compares with gpg's own signing. */
  privateArmored: string;
}

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");
const big = (bytes: Uint8Array) => BigInt(`0x${Buffer.from(bytes).toString("hex") || "0"}`);
function bigBytes(n: bigint): Buffer {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
}

/** OpenPGP keeps u = p⁻¹ mod q; a JWK's qi is q⁻¹ mod p, so p and q swap. */
function rsaPrivateKey(pub: Record<string, Uint8Array>, priv: Record<string, Uint8Array>): KeyObject {
  const [n, e, d, p, q, u] = [pub.n, pub.e, priv.d, priv.p, priv.q, priv.u] as Uint8Array[];
  const D = big(d as Uint8Array);
  const jwk = {
    kty: "RSA",
    n: b64url(n as Uint8Array),
    e: b64url(e as Uint8Array),
    d: b64url(d as Uint8Array),
  };
  const crt = {
    p: b64url(q as Uint8Array),
    q: b64url(p as Uint8Array),
    dp: b64url(bigBytes(D % (big(q as Uint8Array) - 1n))),
    dq: b64url(bigBytes(D % (big(p as Uint8Array) - 1n))),
    qi: b64url(u as Uint8Array),
  };
  return createPrivateKey({ key: { ...jwk, ...crt }, format: "jwk" });
}

function rawKey(packet: openpgp.SecretKeyPacket): RawSigningKey {
  const pub = packet.publicParams as Record<string, Uint8Array>;
  const priv = packet.privateParams as Record<string, Uint8Array>;
  if (packet.algorithm === openpgp.enums.publicKey.rsaEncryptSign) {
    const privateKey = rsaPrivateKey(pub, priv);
    const padding = constants.RSA_PKCS1_PADDING;
    return {
      algorithm: "rsa-pkcs1-sha256",
      publicKey: createPublicKey(privateKey),
      sign: async (digest) =>
        privateEncrypt({ key: privateKey, padding }, Buffer.concat([SHA256_DIGEST_INFO, digest])),
    };
  }
  // Legacy EdDSA: Q is 0x40 followed by the 32-byte public key.
  const x = b64url((pub.Q as Uint8Array).subarray(1));
  const privateKey = createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: b64url(priv.seed as Uint8Array), x },
    format: "jwk",
  });
  return {
    algorithm: "ed25519",
    publicKey: createPublicKey(privateKey),
    sign: async (m) => sign(null, m, privateKey),
  };
}

/** A fresh unprotected OpenPGP key (legacy EdDSA, which gpg 2.2 reads, or RSA) whose primary key signs. */
export async function openPgpTestKey(
  type: "ed25519" | "rsa",
  name = "formats test",
): Promise<OpenPgpTestKey> {
  const generated = await openpgp.generateKey({
    ...(type === "rsa"
      ? { type: "rsa" as const, rsaBits: 2048 }
      : { type: "ecc" as const, curve: "curve25519Legacy" as const }),
    userIDs: [{ name, email: "formats@signing.invalid" }],
    format: "object",
  });
  const packet = generated.privateKey.keyPacket as openpgp.SecretKeyPacket;
  return {
    key: rawKey(packet),
    identity: {
      pubkeyAlgorithm: packet.algorithm as number,
      fingerprint: packet.getFingerprintBytes() as Uint8Array,
    },
    publicArmored: generated.publicKey.armor(),
    privateArmored: generated.privateKey.armor(),
  };
}

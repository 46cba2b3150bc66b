/**
 * A v4 OpenPGP signature packet over a running SHA-256, signed by a RawSigningKey: the
 * algorithm-specific signature fields of RFC 4880 §5.2.2 / RFC 9580 §5.2.3 around the key's raw
 * signature. Shared by the OpenPGP formats, which differ only in what they hash and the type.
 */

import type { Hash } from "node:crypto";
import {
  hashedSuffix,
  PUBKEY_ECDSA,
  PUBKEY_ED25519,
  PUBKEY_EDDSA_LEGACY,
  PUBKEY_RSA_ENCRYPT_SIGN,
  PUBKEY_RSA_SIGN,
  type SignatureParams,
  signatureFields,
  signaturePacket,
} from "../openpgp-packet.js";
import {
  FormatKeyError,
  type RawKeyAlgorithm,
  type RawSigningKey,
  WrongKeyAlgorithmError,
} from "./raw-key.js";

/** Which OpenPGP key the raw key is: what its public key packet says (from the configured certificate). */
export interface OpenPgpKeyIdentity {
  /** The public-key algorithm of the signing (sub)key: 1 or 3 RSA, 19 ECDSA, 22 EdDSA (legacy), 27 Ed25519. */
  pubkeyAlgorithm: number;
  /** Its v4 fingerprint, 20 bytes. */
  fingerprint: Uint8Array;
}

/** The raw key algorithm each OpenPGP public-key algorithm needs. */
const RAW_ALGORITHM: ReadonlyMap<number, RawKeyAlgorithm> = new Map([
  [PUBKEY_EDDSA_LEGACY, "ed25519"],
  [PUBKEY_ED25519, "ed25519"],
  [PUBKEY_ECDSA, "ecdsa-p256"],
  [PUBKEY_RSA_ENCRYPT_SIGN, "rsa-pkcs1-sha256"],
  [PUBKEY_RSA_SIGN, "rsa-pkcs1-sha256"],
]);

/** Refuses, at start-up, a key that cannot make signatures for this OpenPGP identity. */
export function checkOpenPgpKey(format: string, key: RawSigningKey, identity: OpenPgpKeyIdentity): void {
  const needed = RAW_ALGORITHM.get(identity.pubkeyAlgorithm);
  if (needed === undefined) {
    throw new FormatKeyError(
      format,
      `OpenPGP public-key algorithm ${identity.pubkeyAlgorithm} (supported: RSA, ECDSA P-256, EdDSA, Ed25519)`,
    );
  }
  if (identity.fingerprint.length !== 20) {
    throw new FormatKeyError(
      format,
      `a ${identity.fingerprint.length}-byte fingerprint: only v4 keys are supported`,
    );
  }
  if (key.algorithm !== needed) throw new WrongKeyAlgorithmError(format, key.algorithm, [needed]);
}

/**
 * The binary signature packet of type `sigType` over the data already in `dataSha256` (a
 * running SHA-256, copied, not consumed), made at `created`.
 */
export async function openPgpSignaturePacket(
  key: RawSigningKey,
  identity: OpenPgpKeyIdentity,
  dataSha256: Hash,
  sigType: number,
  created: Date,
): Promise<Buffer> {
  const fingerprint = Buffer.from(identity.fingerprint);
  const params: SignatureParams = {
    pubkeyAlgorithm: identity.pubkeyAlgorithm,
    fingerprint,
    keyId: fingerprint.subarray(12),
    created,
    sigType,
  };
  const { hashedFields, trailer } = hashedSuffix(params);
  const digest = dataSha256.copy().update(hashedFields).update(trailer).digest();
  const fields = signatureFields(identity.pubkeyAlgorithm, await key.sign(digest));
  return signaturePacket(params, hashedFields, digest, fields);
}

import { constants, generateKeyPairSync, type KeyObject, privateEncrypt, sign } from "node:crypto";
import type { RawSigningKey } from "../../src/signing/formats/raw-key.js";
import { SHA256_DIGEST_INFO } from "../../src/signing/openpgp-packet.js";

/** A file-backed key as the formats see one, from a node KeyObject: what a key backend hands them. */
export interface TestKey extends RawSigningKey {
  readonly privateKey: KeyObject;
}

export function ed25519TestKey(): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { algorithm: "ed25519", publicKey, privateKey, sign: async (data) => sign(null, data, privateKey) };
}

export function rsaTestKey(bits = 2048): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
  // Prehashed, as src/keys' RSA keys are: PKCS#1 v1.5 type-1 padding over the SHA-256 DigestInfo.
  const padding = constants.RSA_PKCS1_PADDING;
  const signDigest = async (digest: Buffer) =>
    privateEncrypt({ key: privateKey, padding }, Buffer.concat([SHA256_DIGEST_INFO, digest]));
  return { algorithm: "rsa-pkcs1-sha256", publicKey, privateKey, sign: signDigest };
}

/** A key that signs with `signing` but claims `claimed`'s public key: what a wrong key looks like. */
export function mismatchedKey(signing: TestKey, claimed: TestKey): TestKey {
  return { ...signing, publicKey: claimed.publicKey };
}

import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import type { RawSigningKey } from "../../src/signing/formats/raw-key.js";

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
  return { algorithm: "rsa", publicKey, privateKey, sign: async (data) => sign("sha256", data, privateKey) };
}

/** A key that signs with `signing` but claims `claimed`'s public key: what a wrong key looks like. */
export function mismatchedKey(signing: TestKey, claimed: TestKey): TestKey {
  return { ...signing, publicKey: claimed.publicKey };
}

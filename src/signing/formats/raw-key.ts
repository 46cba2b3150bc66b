/**
 * What a format needs of a key backend (DESIGN.md §6): the public half and one raw signature
 * primitive. Formats build their own packets around it, so a file key and a PKCS#11 object
 * plug in alike, and the private key never has to be in this process.
 */

import type { KeyObject } from "node:crypto";
import { SigningClusterError } from "../../errors.js";

export type RawKeyAlgorithm = "ed25519" | "ecdsa-p256" | "rsa-pkcs1-sha256";

/**
 * A signing key as the formats see it: the shape of src/keys' `SigningKey` that they use, so
 * any backend's key fits. `sign` takes, for Ed25519, the message itself (pure EdDSA); for
 * ECDSA P-256 and RSA, the SHA-256 digest to sign (prehashed: a format hashes its input itself,
 * once, while it arrives). It returns the raw signature: 64 bytes for Ed25519, r‖s for ECDSA,
 * the modulus-length PKCS#1 v1.5 block for RSA.
 */
export interface RawSigningKey {
  readonly algorithm: RawKeyAlgorithm;
  /** The public key, a node KeyObject of type "public". */
  readonly publicKey: KeyObject;
  sign(data: Buffer): Promise<Buffer>;
}

/** A key a format cannot use: a configuration mistake, caught at start-up. */
export class FormatKeyError extends SigningClusterError<"KEY_LOAD_FAILED"> {
  constructor(format: string, reason: string) {
    super("KEY_LOAD_FAILED", `${format} cannot sign with this key: ${reason}`);
  }
}

/** A key of an algorithm the format cannot use. */
export class WrongKeyAlgorithmError extends FormatKeyError {
  constructor(format: string, algorithm: RawKeyAlgorithm, supported: readonly RawKeyAlgorithm[]) {
    super(format, `an ${algorithm} key (supported: ${supported.join(", ")})`);
  }
}

/** Refuses a key whose algorithm is not one of `supported`. */
export function requireAlgorithm(
  format: string,
  key: RawSigningKey,
  supported: readonly RawKeyAlgorithm[],
): void {
  if (!supported.includes(key.algorithm)) throw new WrongKeyAlgorithmError(format, key.algorithm, supported);
}

/** The format cannot sign this content (400 UNSUPPORTED_INPUT): the reason goes to the client. */
export class UnsupportedInputError extends SigningClusterError<"UNSUPPORTED_INPUT"> {
  constructor(format: string, reason: string) {
    super("UNSUPPORTED_INPUT", `${format} cannot sign this file: ${reason}`);
  }
}

/** Signing failed on our side (500 SIGNING_FAILED): the details go to the log, not the client. */
export class FormatSigningError extends SigningClusterError<"SIGNING_FAILED"> {
  constructor(format: string, reason: string, options?: ErrorOptions) {
    super("SIGNING_FAILED", `${format} signing failed: ${reason}`, options);
  }
}

/**
 * What a format needs of a key backend (DESIGN.md §6): the public half and one raw signature
 * primitive. Formats build their own packets around it, so a file key and a PKCS#11 object
 * plug in alike, and the private key never has to be in this process.
 */

import type { KeyObject } from "node:crypto";
import { SigningClusterError } from "../../errors.js";

export type RawKeyAlgorithm = "ed25519" | "rsa" | "ecdsa-p256";

/**
 * A signing key as the formats see it.
 * - `ed25519`: `sign(data)` is the pure Ed25519 signature of `data` (64 bytes).
 * - `rsa`: `sign(data)` is RSASSA-PKCS1-v1_5 with SHA-256 over `data` (what
 *   `crypto.sign("sha256", data, key)` and PKCS#11 `CKM_SHA256_RSA_PKCS` give).
 * - `ecdsa-p256`: ECDSA with SHA-256 over `data`, DER-encoded.
 */
export interface RawSigningKey {
  readonly algorithm: RawKeyAlgorithm;
  /** The public key, a node KeyObject of type "public". */
  readonly publicKey: KeyObject;
  sign(data: Buffer): Promise<Buffer>;
}

/** A key whose algorithm the format cannot use: a configuration mistake, caught at start-up. */
export class WrongKeyAlgorithmError extends SigningClusterError<"KEY_LOAD_FAILED"> {
  constructor(format: string, algorithm: RawKeyAlgorithm, supported: readonly RawKeyAlgorithm[]) {
    super(
      "KEY_LOAD_FAILED",
      `${format} cannot sign with an ${algorithm} key (supported: ${supported.join(", ")})`,
    );
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

import type { KeyObject } from "node:crypto";
import { SigningClusterError } from "../errors.js";

/**
 * The signature algorithms a key may have (DESIGN.md §6). Formats build their own packets
 * around the raw signature a key returns.
 */
export type KeyAlgorithm = "ed25519" | "ecdsa-p256" | "rsa-pkcs1-sha256";

/** Where a key's private half lives: a file read into this process, or a PKCS#11 token. */
export type KeyBackendName = "file" | "pkcs11";

/**
 * One signing key, whatever holds it. `sign` takes, for Ed25519, the message itself (pure
 * EdDSA); for ECDSA P-256 and RSA, the SHA-256 digest to sign (prehashed: OpenPGP signs a
 * digest it computed itself). It returns the raw signature: 64 bytes for Ed25519, r‖s (32 + 32
 * bytes) for ECDSA, the modulus-length PKCS#1 v1.5 block for RSA.
 */
export interface SigningKey {
  readonly backend: KeyBackendName;
  readonly algorithm: KeyAlgorithm;
  /** The public half, for the formats' public key encodings and fingerprints. */
  readonly publicKey: KeyObject;
  /** Where the key is, for logs and start-up errors (a file path, or token and key label); no secret. */
  readonly location: string;
  sign(input: Buffer): Promise<Buffer>;
  /** False while the backend is known to be failing (its breaker is open): sign() would fail at once. */
  available(): boolean;
  /**
   * Whether the backend can sign right now, tried through its breaker (a probe signature for
   * PKCS#11): readiness asks it, so a node with no traffic still notices the token is back.
   */
  check(): Promise<{ ok: boolean; detail: string }>;
  /** Lets go of what the key holds (a PKCS#11 session); idempotent. */
  close(): Promise<void>;
}

/** A key that cannot be loaded: the node refuses to start, in one line naming the key and why. */
export class KeyLoadError extends SigningClusterError<"KEY_LOAD_FAILED"> {
  constructor(
    readonly format: string,
    readonly file: string,
    reason: string,
  ) {
    super("KEY_LOAD_FAILED", `cannot load ${format} key from ${file}: ${reason}`);
  }
}

/**
 * A key backend that failed at run time (a token removed, an HSM unreachable, its breaker
 * open): the request is answered 503 KEY_BACKEND_UNAVAILABLE and retried elsewhere, never
 * given a bad or missing signature.
 */
export class KeyBackendUnavailableError extends SigningClusterError<"KEY_BACKEND_UNAVAILABLE"> {
  constructor(location: string, reason: string) {
    super("KEY_BACKEND_UNAVAILABLE", `the key backend of ${location} is unavailable: ${reason}`);
  }
}

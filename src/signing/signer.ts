import { createHash, type Hash } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { KeyBreakerSettings } from "../keys/breaker.js";
import type { KeyBackendName, SigningKey } from "../keys/key.js";
import type { KeyOperationResult, KeyWrapper } from "../keys/observed.js";
import type { Pkcs11KeyOptions } from "../keys/pkcs11/key.js";
import type { SigningPool } from "../keys/pool.js";

export { KeyLoadError } from "../keys/key.js";

/** The formats this build knows how to sign. Adding one touches src/signing/signers/ and this union. */
export type FormatName = "gpg" | "sshsig";

/** A gpg key in a file (the file backend), as the config loader resolved it. */
export interface GpgKeyConfig {
  /** Armored OpenPGP private key file. */
  keyFile: string;
  /** Passphrase, already read from its file or env var by the config loader (undefined: unprotected key). */
  passphrase?: string;
}

/** An sshsig key in a file (the file backend) and the namespace its signatures carry. */
export interface SshsigKeyConfig {
  /** OpenSSH private key file (ed25519, unencrypted). */
  keyFile: string;
  /** SSHSIG namespace, e.g. "file". */
  namespace: string;
}

/** A gpg key in a PKCS#11 token, with the OpenPGP identity the node builds for it. */
export interface GpgPkcs11KeyConfig {
  pkcs11: Pkcs11KeyOptions;
  /** The certified user ID of the OpenPGP public key. */
  userId: string;
  /** The OpenPGP key's creation time: part of its fingerprint, so it must never change. */
  createdAt: Date;
}

/** An sshsig key in a PKCS#11 token. */
export interface SshsigPkcs11KeyConfig {
  pkcs11: Pkcs11KeyOptions;
  namespace: string;
  /** The comment of the OpenSSH public key line. */
  comment: string;
}

export interface KeyConfigs {
  gpg: GpgKeyConfig | GpgPkcs11KeyConfig;
  sshsig: SshsigKeyConfig | SshsigPkcs11KeyConfig;
}

/** How a file key is held: what its signatures are observed through, and the pool RSA keys sign in. */
export interface FileKeyOptions {
  wrap?: KeyWrapper;
  pool?: SigningPool | undefined;
}

/**
 * What every key shares: the signing pool, a PKCS#11 key's breaker settings, where its failures
 * are logged, and who is told of each raw signature (signing_key_operations_total and its duration).
 */
export interface KeyBackendContext {
  breaker: KeyBreakerSettings;
  log: Logger;
  observe(format: FormatName, backend: KeyBackendName, result: KeyOperationResult, seconds: number): void;
  /** Where RSA file keys and every PKCS#11 call sign; without one (signing.workers 0) RSA signs inline. */
  pool: SigningPool | undefined;
}

/**
 * One signing format with its key, loaded once. A node hashes each upload once, with native
 * SHA-256, while it arrives; both formats sign over that running hash, so signing costs the
 * same few microseconds whatever the file size, and nothing re-reads the input.
 */
export interface Signer {
  readonly format: FormatName;
  /** Stable fingerprint of the signing key: part of the result cache identity. */
  readonly fingerprint: string;
  /** Suffix a client gives the signature file: ".asc" for gpg, ".sig" for sshsig. */
  readonly suffix: string;
  /** When the signing key stops being valid (OpenPGP keys may expire); undefined: never. */
  readonly expiresAt?: Date;
  /** The key that signs (file or PKCS#11): readiness checks it, shutdown closes it. */
  readonly key: SigningKey;
  /** Public key (armored OpenPGP key, or an OpenSSH public key line) for verification. */
  publicKey(): string;
  /**
   * The detached signature of an input whose bytes have all gone into `inputSha256`, a running
   * SHA-256 not yet digested. It is copied, not consumed: the caller may still digest it.
   */
  sign(inputSha256: Hash): Promise<Buffer>;
  /** Lets go of the key's backend (a PKCS#11 session); idempotent. */
  close(): Promise<void>;
}

/** Feeds a whole input (bytes or a stream) into a fresh SHA-256, ready for `Signer.sign`. */
export async function hashInput(input: Readable | Uint8Array): Promise<Hash> {
  const hash = createHash("sha256");
  if (input instanceof Uint8Array) return hash.update(input);
  for await (const chunk of input) hash.update(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return hash;
}

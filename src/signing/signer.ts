import { createHash, type Hash } from "node:crypto";
import type { Readable } from "node:stream";
import { SigningClusterError } from "../errors.js";

/** The formats this build knows how to sign. Adding one touches src/signing/signers/ and this union. */
export type FormatName = "gpg" | "sshsig";

export interface GpgKeyConfig {
  /** Armored OpenPGP private key file. */
  keyFile: string;
  /** Passphrase, already read from its file or env var by the config loader (undefined: unprotected key). */
  passphrase?: string;
}

export interface SshsigKeyConfig {
  /** OpenSSH private key file (ed25519, unencrypted). */
  keyFile: string;
  /** SSHSIG namespace, e.g. "file". */
  namespace: string;
}

export interface KeyConfigs {
  gpg: GpgKeyConfig;
  sshsig: SshsigKeyConfig;
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
  /** Public key (armored OpenPGP key, or an OpenSSH public key line) for verification. */
  publicKey(): string;
  /**
   * The detached signature of an input whose bytes have all gone into `inputSha256`, a running
   * SHA-256 not yet digested. It is copied, not consumed: the caller may still digest it.
   */
  sign(inputSha256: Hash): Promise<Buffer>;
}

/** A key that cannot be loaded: the node refuses to start and says which and why. */
export class KeyLoadError extends SigningClusterError<"KEY_LOAD_FAILED"> {
  constructor(
    readonly format: FormatName,
    readonly file: string,
    reason: string,
  ) {
    super("KEY_LOAD_FAILED", `cannot load ${format} key from ${file}: ${reason}`);
  }
}

/** Feeds a whole input (bytes or a stream) into a fresh SHA-256, ready for `Signer.sign`. */
export async function hashInput(input: Readable | Uint8Array): Promise<Hash> {
  const hash = createHash("sha256");
  if (input instanceof Uint8Array) return hash.update(input);
  for await (const chunk of input) hash.update(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return hash;
}

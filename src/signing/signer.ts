import type { Readable } from "node:stream";

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
 * One signing format with its key, loaded once. `sign` consumes the whole input stream and
 * returns the detached signature; it never needs the input in memory at once.
 */
export interface Signer {
  readonly format: FormatName;
  /** Stable fingerprint of the signing key: part of the result cache identity. */
  readonly fingerprint: string;
  /** Suffix a client gives the signature file: ".asc" for gpg, ".sig" for sshsig. */
  readonly suffix: string;
  /** Public key (armored OpenPGP key, or an OpenSSH public key line) for verification. */
  publicKey(): string;
  /** A stream for large inputs; small ones may come whole (much faster through openpgp.js). */
  sign(input: Readable | Uint8Array): Promise<Buffer>;
}

/** A key that cannot be loaded: the node refuses to start and says which and why. */
export class KeyLoadError extends Error {
  constructor(
    readonly format: FormatName,
    readonly file: string,
    reason: string,
  ) {
    super(`cannot load ${format} key from ${file}: ${reason}`);
    this.name = "KeyLoadError";
  }
}

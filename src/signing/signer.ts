import { createHash, type Hash } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { KeyBreakerSettings } from "../keys/breaker.js";
import type { KeyBackendName, SigningKey } from "../keys/key.js";
import type { KeyOperationResult, KeyWrapper } from "../keys/observed.js";
import type { Pkcs11KeyOptions } from "../keys/pkcs11/key.js";
import type { SigningPool } from "../keys/pool.js";
import type { AuthenticodeOptions } from "./formats/authenticode.js";
import { InputFile, type SpooledInput } from "./input-file.js";

export { KeyLoadError } from "../keys/key.js";
export type { SpooledInput };

/** The formats this build knows how to sign. Adding one touches src/signing/signers/ and this union. */
export type FormatName = "gpg" | "sshsig" | "minisign" | "gpg-clearsign" | "authenticode";

/**
 * What a format's output is (DESIGN.md §6): a signature beside the file, the file's text with
 * the signature around it, or the whole file with the signature inside it (Authenticode).
 */
export type FormatKind = "detached" | "clearsigned" | "embedded";

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

/** A minisign key in a file (the file backend): an unencrypted PKCS#8 PEM Ed25519 key. */
export interface MinisignKeyConfig {
  keyFile: string;
}

/** A minisign key in a PKCS#11 token (an Ed25519 object). */
export interface MinisignPkcs11KeyConfig {
  pkcs11: Pkcs11KeyOptions;
}

export interface KeyConfigs {
  gpg: GpgKeyConfig | GpgPkcs11KeyConfig;
  sshsig: SshsigKeyConfig | SshsigPkcs11KeyConfig;
  minisign: MinisignKeyConfig | MinisignPkcs11KeyConfig;
  /** The same key shapes as gpg (it may be the same key). */
  "gpg-clearsign": GpgKeyConfig | GpgPkcs11KeyConfig;
  /** osslsigncode's credentials and how it runs. */
  authenticode: AuthenticodeOptions;
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
 * What a format needs of an upload beyond the running SHA-256 every upload gets (the job's
 * key). The upload pipeline provides exactly this in its one read of the file, so a format that
 * needs nothing more (gpg, sshsig) costs no extra hashing or buffering.
 */
export interface InputNeeds {
  /** The BLAKE2b-512 digest of the whole input (minisign's pre-hashed mode). */
  blake2b512?: boolean;
  /** The whole input in memory (text formats: bounded by the format's maxSize). */
  bytes?: boolean;
  /** The whole input in a private temp file (embedded formats: never the whole file in memory). */
  file?: boolean;
}

/** An upload as a signer receives it: what every format gets, plus what its `needs` asked for. */
export interface SignInput {
  /** The running SHA-256 of the input, not yet digested; a signer copies it, never consumes it. */
  sha256: Hash;
  /** Present when the format's needs asked for it. */
  blake2b512?: Buffer;
  /** Present when the format's needs asked for it. */
  bytes?: Buffer;
  /** Present when the format's needs asked for it. */
  file?: SpooledInput;
  /** The file's plain name as the client gave it (minisign's trusted comment names it). */
  fileName: string;
}

/**
 * One signing format with its key, loaded once. A node reads each upload once, while it
 * arrives, computing what the format's `needs` ask; the signer turns that into its output
 * (the sigstore-js model: `sign(data) → signature`), so the HTTP layer decides nothing per format.
 */
export interface Signer {
  readonly format: FormatName;
  readonly kind: FormatKind;
  /** Stable fingerprint of the signing key: part of the result cache identity. */
  readonly fingerprint: string;
  /** Suffix a client gives the output file: ".asc" for gpg, ".sig" for sshsig, ".minisig" for minisign. */
  readonly suffix: string;
  /** What this format needs of an upload beyond its running SHA-256. */
  readonly needs: InputNeeds;
  /** The Content-Type of its output. */
  readonly contentType: string;
  /** When the signing key stops being valid (OpenPGP keys may expire); undefined: never. */
  readonly expiresAt?: Date;
  /** The key that signs (file or PKCS#11): readiness checks it, shutdown closes it. */
  readonly key: SigningKey;
  /** Public key in the format's own encoding (armored OpenPGP, an OpenSSH line, a minisign key). */
  publicKey(): string;
  /**
   * Refuses content this format cannot sign (throws UNSUPPORTED_INPUT) before a job is claimed
   * for it, so the upload itself is answered 400; absent: every input is signable.
   */
  accept?(input: SignInput): void | Promise<void>;
  /**
   * Whether an output stored for the same input and key answers this upload too; absent:
   * always. minisign's names the file, so the same bytes under another name are signed again.
   */
  serves?(output: Buffer, input: SignInput): boolean;
  /**
   * The output for one input (a detached signature, or the clearsigned text). A format that
   * cannot sign this content throws UNSUPPORTED_INPUT.
   */
  sign(input: SignInput): Promise<Buffer>;
  /**
   * Embedded formats: writes the whole signed file to `outputFile` (from `input.file`); the
   * node stores it as a whole-file result instead of `sign`'s output.
   */
  signFile?(input: SignInput, outputFile: string): Promise<void>;
  /** Lets go of the key's backend (a PKCS#11 session); idempotent. */
  close(): Promise<void>;
}

/**
 * Reads an upload once and gives what `needs` asks of it: the one pass every upload path
 * takes (the multipart route feeds chunks as they arrive; tests and probes feed a whole input).
 */
export class InputReader {
  readonly sha256 = createHash("sha256");
  private readonly blake2b: Hash | undefined;
  private readonly chunks: Buffer[] | undefined;
  private readonly file: InputFile | undefined;

  constructor(needs: InputNeeds) {
    this.blake2b = needs.blake2b512 ? createHash("blake2b512") : undefined;
    this.chunks = needs.bytes ? [] : undefined;
    this.file = needs.file ? new InputFile() : undefined;
  }

  /** False when the input's temp file asks the caller to wait for `drained()` before more. */
  update(chunk: Buffer): boolean {
    this.sha256.update(chunk);
    this.blake2b?.update(chunk);
    this.chunks?.push(chunk);
    return this.file ? this.file.write(chunk) : true;
  }

  drained(): Promise<void> {
    return this.file ? this.file.drained() : Promise.resolve();
  }

  /** The signer's input; the running SHA-256 stays usable (it is copied, not digested). */
  async finish(fileName: string): Promise<SignInput> {
    const file = this.file ? await this.file.end() : undefined;
    return {
      sha256: this.sha256.copy(),
      ...(this.blake2b ? { blake2b512: this.blake2b.digest() } : {}),
      ...(this.chunks ? { bytes: Buffer.concat(this.chunks) } : {}),
      ...(file ? { file } : {}),
      fileName,
    };
  }

  /** An input not finished (its upload broke off): its temp file goes. */
  async abandon(): Promise<void> {
    await this.file?.discard();
  }
}

/** Reads a whole input (bytes or a stream) once into what `needs` asks, ready for `Signer.sign`. */
export async function hashInput(
  input: Readable | Uint8Array,
  needs: InputNeeds = {},
  fileName = "input",
): Promise<SignInput> {
  const reader = new InputReader(needs);
  try {
    if (input instanceof Uint8Array) reader.update(Buffer.from(input));
    else
      for await (const chunk of input) {
        if (!reader.update(typeof chunk === "string" ? Buffer.from(chunk) : chunk)) await reader.drained();
      }
  } catch (err) {
    await reader.abandon();
    throw err;
  }
  return reader.finish(fileName);
}

import { createHash, type Hash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../files/write-atomic.js";
import {
  AuthenticodeScan,
  authenticodeCertificate,
  checkAuthenticodeFile,
} from "../signing/verify-authenticode.js";
import { checkMinisignSignature, minisignVerifyingKey } from "../signing/verify-minisign.js";
import { checkSshSignature, sshVerifyingKey } from "../signing/verify-sshsig.js";
import type { Deadline } from "./deadline.js";
import { ClientError } from "./errors.js";
import { checkClearsigned } from "./verify-clearsign.js";
import { checkOpenpgpSignature, openpgpVerifyingKeys } from "./verify-openpgp.js";

/**
 * What a signature is checked against: the input's running SHA-256, the input hashed anew, or
 * (for a format whose output carries the input, clearsigned) the input itself.
 */
export interface InputHash {
  sha256: Hash;
  rehash(algorithm: string): Promise<Hash>;
  whole(): Promise<Buffer>;
}

/** Checks one signature over one input; why it does not verify, or undefined when it does. */
export type SignatureCheck = (signature: Buffer, input: InputHash) => Promise<string | undefined>;

/** The formats signtool can check, each from its public key as `/keys/:format` serves it. */
async function checkerFor(format: string, keyText: string): Promise<SignatureCheck> {
  switch (format) {
    case "gpg": {
      const keys = await openpgpVerifyingKeys(keyText);
      return (sig, input) => checkOpenpgpSignature(sig.toString("utf8"), keys, input.sha256, input.rehash);
    }
    case "sshsig": {
      const key = sshVerifyingKey(keyText);
      return (sig, input) => checkSshSignature(sig.toString("utf8"), key, input.sha256, input.rehash);
    }
    case "gpg-clearsign": {
      const keys = await openpgpVerifyingKeys(keyText);
      return async (signed, input) => checkClearsigned(signed, await input.whole(), keys);
    }
    case "minisign": {
      const key = minisignVerifyingKey(keyText);
      return (sig, input) => checkMinisignSignature(sig.toString("utf8"), key, input.rehash, input.whole);
    }
    case "authenticode": {
      const der = authenticodeCertificate(keyText);
      return async (signed) => checkAuthenticodeFile(signed, der);
    }
    default:
      throw new Error(`signtool cannot check ${format} signatures`);
  }
}

/** The check of a signed file (embedded formats), fed its bytes as they stream to disk. */
export interface OutputScan {
  update(piece: Buffer): void;
  /** Why the file does not verify, or undefined when it does. */
  result(): string | undefined;
}

/** Embedded formats' outputs are whole files, checked as they stream and never held whole. */
function scannerFor(format: string, keyText: string): { scan?: () => OutputScan } {
  if (format !== "authenticode") return {};
  const der = authenticodeCertificate(keyText);
  return { scan: () => new AuthenticodeScan(der) };
}

/** A short name for a key in messages: the first hex digits of its text's sha256. */
export const keyDigest = (text: string) =>
  createHash("sha256").update(text.trim()).digest("hex").slice(0, 16);

/** How a format's outputs are checked, and where its key came from (for messages). */
export interface FormatCheck {
  check: SignatureCheck;
  /** Embedded formats: a fresh scan per signed file. */
  scan?: () => OutputScan;
  from: string;
}

/** Where a run's trusted keys come from: pinned ones, the cache, the nodes. */
export interface TrustedKeysOptions {
  /** Keys given on the command line or in the config file: format → the key's text. */
  pinned: ReadonlyMap<string, { text: string; from: string }>;
  /** With a cache, a key fetched from the nodes is kept in `<cacheDir>/keys/` for later runs. */
  cacheDir?: string;
  /** Asks every listed node for the format's key, until `deadline`; they must agree. */
  fetch(format: string, deadline: Deadline): Promise<string>;
}

/**
 * The key each format's signatures are checked against, in this order: pinned (`--trusted-key`
 * or the config file), kept in the cache from an earlier run, or fetched from the listed nodes
 * (which must all serve the same key) and then kept. One lookup per format per run.
 */
export class TrustedKeys {
  private readonly checks = new Map<string, Promise<FormatCheck>>();

  constructor(private readonly opts: TrustedKeysOptions) {}

  /** The check for `format`, and where its key came from (for messages). */
  checker(format: string, deadline: Deadline): Promise<FormatCheck> {
    let found = this.checks.get(format);
    if (!found) {
      found = this.load(format, deadline);
      // A failed lookup (no node answered yet) is tried again by the next file.
      found.catch(() => this.checks.delete(format));
      this.checks.set(format, found);
    }
    return found;
  }

  private async load(format: string, deadline: Deadline): Promise<FormatCheck> {
    const { text, from } = await this.keyText(format, deadline);
    try {
      return { check: await checkerFor(format, text), ...scannerFor(format, text), from };
    } catch (err) {
      throw new ClientError(
        "CONFIG",
        `the ${format} key from ${from} is unusable: ${(err as Error).message}`,
      );
    }
  }

  private async keyText(format: string, deadline: Deadline): Promise<{ text: string; from: string }> {
    const pinned = this.opts.pinned.get(format);
    if (pinned) return pinned;
    const cached = this.cacheFile(format);
    if (cached) {
      const text = await readFile(cached, "utf8").catch(() => undefined);
      if (text) return { text, from: `${cached} (kept from an earlier run)` };
    }
    const text = await this.opts.fetch(format, deadline);
    if (cached) {
      await mkdir(join(this.opts.cacheDir as string, "keys"), { recursive: true });
      await writeFileAtomic(cached, text);
    }
    return { text, from: `the nodes (key ${keyDigest(text)})` };
  }

  private cacheFile(format: string): string | undefined {
    return this.opts.cacheDir ? join(this.opts.cacheDir, "keys", `${format}.pub`) : undefined;
  }
}

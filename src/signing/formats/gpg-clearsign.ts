/**
 * OpenPGP cleartext signatures (RFC 9580 §7, as gpg 2.2 reads RFC 4880's): the text, readable,
 * inside a signature of type 0x01 over its canonical form. What apt's `InRelease` is. Text
 * only: binary input, or a line longer than gpg reads, is refused as UNSUPPORTED_INPUT.
 */

import { isUtf8 } from "node:buffer";
import { createHash } from "node:crypto";
import { armorSignature, SIG_TYPE_TEXT } from "../openpgp-packet.js";
import { checkOpenPgpKey, type OpenPgpKeyIdentity, openPgpSignaturePacket } from "./openpgp-signature.js";
import { type RawSigningKey, UnsupportedInputError } from "./raw-key.js";

export type { OpenPgpKeyIdentity } from "./openpgp-signature.js";

const FORMAT = "gpg-clearsign";

/**
 * The longest line accepted, in bytes without its line ending: gpg reads cleartext in lines of
 * under 20 000 bytes and fails on longer ones, so such a file could never be verified.
 */
export const CLEARSIGN_MAX_LINE_BYTES = 16 * 1024;

/** Options of one cleartext signature. */
export interface ClearsignOptions {
  /** The signature's creation time (default: now). */
  created?: Date;
  /** The longest line accepted (default: `CLEARSIGN_MAX_LINE_BYTES`). */
  maxLineBytes?: number;
}

/** Refuses input that is not text: NUL bytes, invalid UTF-8. */
function requireText(input: Buffer): void {
  if (input.includes(0)) throw new UnsupportedInputError(FORMAT, "it has NUL bytes: not text");
  if (!isUtf8(input)) throw new UnsupportedInputError(FORMAT, "it is not valid UTF-8 text");
}

/**
 * The lines of the text, each without its line ending (LF or CRLF). A final line ending ends
 * the last line rather than starting an empty one: "a\n" and "a" are the same one line.
 */
export function cleartextLines(input: Buffer, maxLineBytes = CLEARSIGN_MAX_LINE_BYTES): string[] {
  requireText(input);
  const lines = input.toString("utf8").split("\n");
  const terminated = lines.length > 1 && lines[lines.length - 1] === "";
  if (terminated) lines.pop();
  return lines.map((raw, index) => {
    // A CR ends a line only before its LF: a last line without one keeps it, and is refused.
    const endsInLf = terminated || index < lines.length - 1;
    const line = endsInLf && raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.includes("\r")) {
      throw new UnsupportedInputError(
        FORMAT,
        `line ${index + 1} has a carriage return not followed by a line feed`,
      );
    }
    if (Buffer.byteLength(line) > maxLineBytes) {
      throw new UnsupportedInputError(FORMAT, `line ${index + 1} is longer than ${maxLineBytes} bytes`);
    }
    return line;
  });
}

/** The text a cleartext signature covers: trailing spaces and tabs removed, CRLF between lines, none after the last. */
export function canonicalText(lines: readonly string[]): string {
  return lines.map((line) => line.replace(/[ \t]+$/, "")).join("\r\n");
}

/**
 * A line as the cleartext shows it: one starting with "-" is dash-escaped ("- "), so it cannot
 * pass for an armor line; so is one starting with "From ", which mail transports mangle (gpg's
 * default too).
 */
export function dashEscape(line: string): string {
  return line.startsWith("-") || line.startsWith("From ") ? `- ${line}` : line;
}

/**
 * The cleartext-signed form of `input`: the header naming the hash, the dash-escaped text with
 * LF line endings (trailing whitespace kept, as gpg keeps it), and the armored signature over
 * the text's canonical form.
 */
export async function clearsign(
  input: Buffer,
  key: RawSigningKey,
  identity: OpenPgpKeyIdentity,
  options: ClearsignOptions = {},
): Promise<Buffer> {
  checkOpenPgpKey(FORMAT, key, identity);
  const lines = cleartextLines(input, options.maxLineBytes);
  const canonical = createHash("sha256").update(canonicalText(lines), "utf8");
  const created = options.created ?? new Date();
  const packet = await openPgpSignaturePacket(key, identity, canonical, SIG_TYPE_TEXT, created);
  const text = lines.map(dashEscape).join("\n");
  return Buffer.from(
    `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n${text}\n${armorSignature(packet)}`,
  );
}

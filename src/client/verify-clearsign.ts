import { createHash } from "node:crypto";
import { canonicalText, cleartextLines } from "../signing/formats/gpg-clearsign.js";
import { checkOpenpgpSignature, type VerifyingKey } from "./verify-openpgp.js";

/**
 * Checks an OpenPGP cleartext-signed file (RFC 9580 §7) against the input it was made from: the
 * text it shows is the input's (in canonical form: what the signature covers), and the
 * signature over that text verifies with a trusted key.
 */

const BEGIN = "-----BEGIN PGP SIGNED MESSAGE-----";
const SIGNATURE = "-----BEGIN PGP SIGNATURE-----";

/** The shown text's lines (dash-escaping undone) and the armored signature, or why not. */
function parseCleartext(text: string): { lines: string[]; armored: string } | string {
  const all = text.split("\n").map((l) => l.replace(/\r$/, ""));
  if (all[0] !== BEGIN) return "not a cleartext signature (no BEGIN PGP SIGNED MESSAGE line)";
  const blank = all.indexOf("", 1);
  const sigAt = all.indexOf(SIGNATURE, blank + 1);
  if (blank < 0 || sigAt < 0) return "not a cleartext signature (no text or no signature)";
  if (all.slice(1, blank).some((h) => !/^Hash: /.test(h)))
    return "not a cleartext signature (an armor header other than Hash)";
  const lines = all.slice(blank + 1, sigAt).map((l) => (l.startsWith("- ") ? l.slice(2) : l));
  return { lines, armored: all.slice(sigAt).join("\n") };
}

/** Why `signed` is not a good cleartext signature of `input` by one of `keys`; undefined when it is. */
export async function checkClearsigned(
  signed: Buffer,
  input: Buffer,
  keys: readonly VerifyingKey[],
): Promise<string | undefined> {
  const parsed = parseCleartext(signed.toString("utf8"));
  if (typeof parsed === "string") return parsed;
  const canonical = canonicalText(parsed.lines);
  let expected: string;
  try {
    expected = canonicalText(cleartextLines(input));
  } catch (err) {
    return `the input is not text a cleartext signature can carry (${(err as Error).message})`;
  }
  if (canonical !== expected) return "the text it carries is not this file's";
  const hashOf = async (algorithm: string) => createHash(algorithm).update(canonical, "utf8");
  return checkOpenpgpSignature(parsed.armored, keys, await hashOf("sha256"), hashOf, 1);
}

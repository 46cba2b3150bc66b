/**
 * Reads the signing certificate of the Authenticode credentials once, at start-up: its
 * fingerprint is what `/formats` shows, and credentials that cannot be read stop the node
 * (KEY_LOAD_FAILED) instead of failing every upload.
 */

import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { AuthenticodeCredentials } from "./authenticode.js";
import { FormatKeyError } from "./raw-key.js";
import { runTool, withPrivateDir } from "./run-tool.js";

const FORMAT = "authenticode";
const OPENSSL_TIMEOUT_MS = 30_000;

/** What a node says of its Authenticode certificate. */
export interface AuthenticodeCertificate {
  /** SHA-256 of the signing certificate, colon-separated upper-case hex (as openssl prints it). */
  fingerprint256: string;
  subject: string;
  validTo: Date;
  /** The certificate itself (its public key is what a readiness check shows), and in PEM. */
  x509: X509Certificate;
  pem: string;
}

/** The signing certificate in PEM: a PKCS#12 file is opened with openssl, the passphrase on stdin. */
async function signingCertificatePem(c: AuthenticodeCredentials): Promise<string> {
  if (c.kind !== "pkcs12") return readFile(c.certFile, "utf8");
  const args = ["pkcs12", "-in", c.pkcs12File, "-nokeys", "-clcerts", "-passin", "stdin"];
  const result = await withPrivateDir("authenticode-cert-", undefined, (cwd) =>
    runTool("openssl", args, { cwd, timeoutMs: OPENSSL_TIMEOUT_MS, stdin: `${c.passphrase ?? ""}\n` }),
  );
  if (result.exitCode !== 0) throw new Error("openssl cannot open it (a wrong passphrase, or not PKCS#12)");
  return result.stdout;
}

/** The first certificate of the credentials: the one that signs. */
export async function loadAuthenticodeCertificate(
  credentials: AuthenticodeCredentials,
): Promise<AuthenticodeCertificate> {
  const file = credentials.kind === "pkcs12" ? credentials.pkcs12File : credentials.certFile;
  try {
    const cert = new X509Certificate(await signingCertificatePem(credentials));
    return {
      fingerprint256: cert.fingerprint256,
      subject: cert.subject,
      validTo: new Date(cert.validTo),
      x509: cert,
      pem: cert.toString(),
    };
  } catch (err) {
    throw new FormatKeyError(FORMAT, `the certificate in ${file} cannot be read (${(err as Error).message})`);
  }
}

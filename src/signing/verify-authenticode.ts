import { X509Certificate } from "node:crypto";

const PS_BEGIN = "# SIG # Begin signature block";
const PS_END = "# SIG # End signature block";

/** The DER of the certificate `/keys/authenticode` serves (PEM): what a signed file must carry. */
export function authenticodeCertificate(pem: string): Buffer {
  return new X509Certificate(pem).raw;
}

/** A PowerShell-style script's signature block, base64 in `# ` comment lines, decoded. */
function scriptSignatureBlock(text: string): Buffer | undefined {
  const begin = text.lastIndexOf(PS_BEGIN);
  const end = text.lastIndexOf(PS_END);
  if (begin < 0 || end < begin) return undefined;
  const body = text
    .slice(begin + PS_BEGIN.length, end)
    .split(/\r?\n/)
    .map((line) => line.replace(/^#\s?/, "").trim())
    .join("");
  return Buffer.from(body, "base64");
}

/**
 * Whether `signed` carries an Authenticode signature block holding the trusted signing
 * certificate (the PKCS#7 SignedData embeds it, in DER in a binary, base64 in a script); why
 * not, or undefined. The cryptographic check is `osslsigncode verify` against the CA.
 */
export function checkAuthenticodeFile(signed: Buffer, certificateDer: Buffer): string | undefined {
  if (signed.includes(certificateDer)) return undefined;
  const block = scriptSignatureBlock(signed.toString("latin1"));
  if (block?.includes(certificateDer)) return undefined;
  return block || signed.length === 0
    ? "its signature block does not carry the trusted certificate"
    : "it carries no Authenticode signature with the trusted certificate";
}

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

/** How much of a signed file's end is kept for a script's signature block (a few KiB in practice). */
const SCRIPT_TAIL_BYTES = 1024 * 1024;

/**
 * Whether a signed file carries an Authenticode signature block holding the trusted signing
 * certificate (the PKCS#7 SignedData embeds it, in DER in a binary, base64 in a script's
 * closing comment block), fed the file in pieces as it streams: it keeps only the certificate's
 * length of overlap between pieces and the file's last SCRIPT_TAIL_BYTES, never the file. The
 * cryptographic check is `osslsigncode verify` against the CA.
 */
export class AuthenticodeScan {
  private found = false;
  /** The last bytes seen, one short of the certificate: a match may straddle two pieces. */
  private overlap = Buffer.alloc(0);
  private tail: Buffer[] = [];
  private tailBytes = 0;
  private seen = 0;

  constructor(private readonly certificateDer: Buffer) {}

  update(piece: Buffer): void {
    this.seen += piece.length;
    if (!this.found) this.search(piece);
    this.tail.push(piece);
    this.tailBytes += piece.length;
    while (this.tail.length > 1 && this.tailBytes - (this.tail[0] as Buffer).length >= SCRIPT_TAIL_BYTES)
      this.tailBytes -= (this.tail.shift() as Buffer).length;
  }

  private search(piece: Buffer): void {
    const der = this.certificateDer;
    const keep = der.length - 1;
    const seam = Buffer.concat([this.overlap, piece.subarray(0, keep)]);
    this.found = seam.includes(der) || piece.includes(der);
    const last = piece.length >= keep ? piece : Buffer.concat([this.overlap, piece]);
    this.overlap = Buffer.from(last.subarray(Math.max(0, last.length - keep)));
  }

  /** Why the file does not carry the trusted certificate, or undefined when it does. */
  result(): string | undefined {
    if (this.found) return undefined;
    const block = scriptSignatureBlock(Buffer.concat(this.tail).toString("latin1"));
    if (block?.includes(this.certificateDer)) return undefined;
    return block || this.seen === 0
      ? "its signature block does not carry the trusted certificate"
      : "it carries no Authenticode signature with the trusted certificate";
  }
}

/** AuthenticodeScan over a signed file held in memory (small ones: signing-admin's probe). */
export function checkAuthenticodeFile(signed: Buffer, certificateDer: Buffer): string | undefined {
  const scan = new AuthenticodeScan(certificateDer);
  scan.update(signed);
  return scan.result();
}

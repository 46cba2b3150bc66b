import type { X509Certificate } from "node:crypto";
import { constants } from "node:fs";
import { access, open } from "node:fs/promises";
import { extname } from "node:path";
import type { Logger } from "pino";
import type { KeyAlgorithm, SigningKey } from "../../keys/key.js";
import { type AuthenticodeOptions, pkcs11KeyUri, signAuthenticode } from "../formats/authenticode.js";
import { loadAuthenticodeCertificate } from "../formats/authenticode-cert.js";
import { FormatSigningError, UnsupportedInputError } from "../formats/raw-key.js";
import type { Signer, SignInput } from "../signer.js";

const FORMAT = "authenticode";

/**
 * The script extensions signed as PowerShell. osslsigncode picks a script's signature block by
 * its extension, and these three get the same one. (Its XML and MOF script kinds would sign the
 * same bytes differently by name, so they are not taken.)
 */
const SCRIPT_EXTENSIONS = new Set([".ps1", ".psm1", ".psd1"]);

/** The binary types osslsigncode signs, by their first bytes: PE (MZ), CAB, MSI (OLE), CAT (DER). */
function binaryExtension(head: Buffer): ".exe" | ".cab" | ".msi" | ".cat" | undefined {
  if (head.subarray(0, 2).toString("latin1") === "MZ") return ".exe";
  if (head.subarray(0, 4).toString("latin1") === "MSCF") return ".cab";
  if (head.subarray(0, 4).equals(Buffer.from([0xd0, 0xcf, 0x11, 0xe0]))) return ".msi";
  if (head[0] === 0x30) return ".cat";
  return undefined;
}

/**
 * The extension osslsigncode is given for an input: its type, from its bytes (a script: from its
 * name), never the client's own extension, so that a signed file is a function of the input's
 * bytes alone, as results cached by the input's digest assume. A PE, CAB or MSI named as a
 * script is refused: signed as one it would be unsigned as what it is.
 */
async function signingExtension(path: string, fileName: string): Promise<string> {
  const head = await firstBytes(path, 4);
  const binary = binaryExtension(head);
  if (SCRIPT_EXTENSIONS.has(extname(fileName).toLowerCase())) {
    if (binary && binary !== ".cat")
      throw new UnsupportedInputError(
        FORMAT,
        `a PE, CAB or MSI file named as a script (${extname(fileName)})`,
      );
    return ".ps1";
  }
  if (!binary) throw new UnsupportedInputError(FORMAT, "not a PE, MSI, CAB, CAT or PowerShell file");
  return binary;
}

async function firstBytes(path: string, n: number): Promise<Buffer> {
  const handle = await open(path, "r");
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await handle.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** Whether every file in `files` can be read: the files osslsigncode opens for each signature. */
async function readable(files: string[], what: string): Promise<{ ok: boolean; detail: string }> {
  for (const file of files) {
    const failure = await access(file, constants.R_OK).then(
      () => undefined,
      (err: NodeJS.ErrnoException) => err.code ?? "error",
    );
    if (failure) return { ok: false, detail: `cannot read ${file} (${failure})` };
  }
  return { ok: true, detail: what };
}

/** Where the key is (no secret: a PKCS#11 URI carries no PIN) and the files its readiness needs. */
function keyPlace(c: AuthenticodeOptions["credentials"]): { location: string; files: string[] } {
  if (c.kind === "pem") return { location: c.keyFile, files: [c.keyFile] };
  if (c.kind === "pkcs12") return { location: c.pkcs12File, files: [c.pkcs12File] };
  // A bare module name is the dynamic loader's to find.
  const files = [c.engine, ...(c.module.includes("/") ? [c.module] : []), c.certFile];
  return { location: pkcs11KeyUri(c), files };
}

/**
 * The credentials as the readiness check and shutdown see a key: osslsigncode opens them per
 * file, so there is no session to lose or close; the certificate's public key is what it shows.
 * A PKCS#11 key is checked no further than its engine, module and certificate being there:
 * only osslsigncode logs in to the token, once per file.
 */
function credentialsKey(options: AuthenticodeOptions, cert: X509Certificate): SigningKey {
  const c = options.credentials;
  const { location, files } = keyPlace(c);
  const type = cert.publicKey.asymmetricKeyType;
  const algorithm: KeyAlgorithm =
    type === "ed25519" ? "ed25519" : type === "ec" ? "ecdsa-p256" : "rsa-pkcs1-sha256";
  return {
    backend: c.kind === "pkcs11" ? "pkcs11" : "file",
    algorithm,
    publicKey: cert.publicKey,
    location,
    sign: () =>
      Promise.reject(new FormatSigningError(FORMAT, "osslsigncode signs whole files, not raw digests")),
    available: () => true,
    check: () =>
      readable(
        files,
        c.kind === "pkcs11" ? "engine, module and certificate readable" : "credentials readable",
      ),
    close: async () => {},
  };
}

/**
 * The `authenticode` signer: the signature embedded in the file itself by osslsigncode, so its
 * output is the whole signed file (kind embedded), spooled to disk on the way in and out.
 */
export async function loadAuthenticodeSigner(options: AuthenticodeOptions, log: Logger): Promise<Signer> {
  const certificate = await loadAuthenticodeCertificate(options.credentials);
  const key = credentialsKey(options, certificate.x509);
  const fingerprint = certificate.fingerprint256.replaceAll(":", "").toLowerCase();
  return {
    format: FORMAT,
    kind: "embedded",
    fingerprint,
    suffix: "",
    needs: { file: true },
    contentType: "application/octet-stream",
    expiresAt: certificate.validTo,
    key,
    publicKey: () => certificate.pem,
    async accept(input: SignInput): Promise<void> {
      if (!input.file) throw new FormatSigningError(FORMAT, "no spooled input: its needs were not met");
      await signingExtension(input.file.path, input.fileName);
    },
    sign: () => Promise.reject(new FormatSigningError(FORMAT, "an embedded format signs files (signFile)")),
    async signFile(input: SignInput, outputFile: string): Promise<void> {
      if (!input.file) throw new FormatSigningError(FORMAT, "no spooled input: its needs were not met");
      const ext = await signingExtension(input.file.path, input.fileName);
      await signAuthenticode(
        { inputFile: input.file.path, fileName: `input${ext}`, outputFile },
        options,
        log,
      );
    },
    close: async () => {},
  };
}

/**
 * Authenticode signatures, embedded in the file itself (PE, MSI, CAB, CAT, PowerShell scripts),
 * made by `osslsigncode sign` as an external tool: no shell, a timeout, a private temp dir.
 * A file osslsigncode does not recognise is the client's mistake (UNSUPPORTED_INPUT); any other
 * failure is ours (SIGNING_FAILED), with the tool's output in the log only.
 */

import { randomBytes } from "node:crypto";
import { copyFile, rename, stat, symlink, unlink } from "node:fs/promises";
import { extname, join } from "node:path";
import type { Logger } from "pino";
import { KeyBackendUnavailableError } from "../../keys/key.js";
import { FormatSigningError, UnsupportedInputError } from "./raw-key.js";
import { runTool, withPrivateDir } from "./run-tool.js";

const FORMAT = "authenticode";

/** Where osslsigncode finds the certificate chain and the private key. */
export type AuthenticodeCredentials =
  /** A PEM certificate file (the signing certificate, then its intermediates) and a PEM private key. */
  | { kind: "pem"; certFile: string; keyFile: string; passphrase?: string }
  /** A PKCS#12 file holding the key and the chain. */
  | { kind: "pkcs12"; pkcs12File: string; passphrase?: string }
  /** A key in a PKCS#11 token, used through OpenSSL's PKCS#11 engine; `certFile` is its PEM chain. */
  | ({ kind: "pkcs11"; certFile: string } & AuthenticodePkcs11Key);

/** A PKCS#11 key as osslsigncode's engine finds it: by token label, and key label and/or id. */
export interface AuthenticodePkcs11Key {
  /** The OpenSSL PKCS#11 engine (libp11's pkcs11.so) and the token's PKCS#11 module. */
  engine: string;
  module: string;
  tokenLabel: string;
  keyLabel?: string;
  /** CKA_ID, hex. */
  keyId?: string;
  /** The user PIN: given on osslsigncode's stdin only. */
  pin: string;
}

/**
 * The environment variables a PKCS#11 module reads its own configuration from, passed through
 * to osslsigncode (whose environment is otherwise fixed): SoftHSM2 finds its tokens by one.
 */
const PKCS11_MODULE_ENV = ["SOFTHSM2_CONF"];

/** How the node runs osslsigncode (the `authenticode` format's configuration). */
export interface AuthenticodeOptions {
  credentials: AuthenticodeCredentials;
  /** An RFC 3161 timestamping server; none by default, as the signing machines are offline. */
  timestampUrl?: string;
  /** osslsigncode is killed after this long (default `AUTHENTICODE_TIMEOUT_MS`). */
  timeoutMs?: number;
  /** The osslsigncode executable (default: `osslsigncode` on PATH). */
  command?: string;
  /** Program description and URL that Windows shows with the signature (osslsigncode -n, -i). */
  description?: string;
  url?: string;
  /** Where the private temp dirs are made (default: the OS temp dir). */
  tmpDir?: string;
}

/** One file to sign: a spooled upload, the name the client gave it, where the signed file goes. */
export interface AuthenticodeJob {
  inputFile: string;
  /** The name osslsigncode is shown: its extension tells it the file's type (a script's, above all). */
  fileName: string;
  outputFile: string;
}

export const AUTHENTICODE_TIMEOUT_MS = 120_000;

/** What osslsigncode prints when the input is none of the file types it can sign. */
const UNSUPPORTED_MESSAGE = "unsupported input file type";

/**
 * What libp11's engine prints when no token has the URI's label, or when the module cannot
 * start (C_Initialize fails: SoftHSM2 without its token directory, an HSM out of reach).
 */
const TOKEN_ABSENT_MESSAGES = ["No matching initialized token was found", "Unable to load module"];

/** The file's extension if it is a plain one ("" otherwise): the only part of a client's name the tool sees. */
function safeExtension(fileName: string): string {
  const ext = extname(fileName);
  return /^\.[A-Za-z0-9]{1,16}$/.test(ext) ? ext : "";
}

/**
 * RFC 7512 percent-encoding of an attribute value: encodeURIComponent leaves only characters a
 * PKCS#11 URI path may carry as they are (`;`, `/`, `?`, `%` and spaces are encoded).
 */
const pkcs11UriValue = (value: string) => encodeURIComponent(value);
const pct = (b: number) => `%${b.toString(16).padStart(2, "0").toUpperCase()}`;

/** The RFC 7512 URI of the private key, e.g. `pkcs11:token=ci;object=code%20signing;type=private` (no PIN in it). */
export function pkcs11KeyUri(k: Omit<AuthenticodePkcs11Key, "pin" | "engine" | "module">): string {
  const attributes = [
    `token=${pkcs11UriValue(k.tokenLabel)}`,
    ...(k.keyLabel !== undefined ? [`object=${pkcs11UriValue(k.keyLabel)}`] : []),
    ...(k.keyId !== undefined ? [`id=${[...Buffer.from(k.keyId, "hex")].map(pct).join("")}`] : []),
    "type=private",
  ];
  return `pkcs11:${attributes.join(";")}`;
}

/** What osslsigncode reads on stdin: the key's passphrase, or the token's PIN. */
function stdinSecret(c: AuthenticodeCredentials): string | undefined {
  return c.kind === "pkcs11" ? c.pin : c.passphrase;
}

/** Where osslsigncode finds the certificate chain and the key (for PKCS#11: through the engine). */
function keyArgs(c: AuthenticodeCredentials): string[] {
  switch (c.kind) {
    case "pem":
      return ["-certs", c.certFile, "-key", c.keyFile];
    case "pkcs12":
      return ["-pkcs12", c.pkcs12File];
    case "pkcs11":
      return [
        "-pkcs11engine",
        c.engine,
        "-pkcs11module",
        c.module,
        "-certs",
        c.certFile,
        "-key",
        pkcs11KeyUri(c),
      ];
  }
}

function credentialArgs(c: AuthenticodeCredentials): string[] {
  // "-readpass -": the passphrase or PIN comes on stdin, never on a command line that `ps` shows.
  return stdinSecret(c) === undefined ? keyArgs(c) : [...keyArgs(c), "-readpass", "-"];
}

/** The PKCS#11 module's own configuration variables, for a PKCS#11 key; nothing otherwise. */
function toolEnvironment(c: AuthenticodeCredentials): Record<string, string> {
  if (c.kind !== "pkcs11") return {};
  return Object.fromEntries(
    PKCS11_MODULE_ENV.flatMap((name) => {
      const value = process.env[name];
      return value === undefined ? [] : [[name, value]];
    }),
  );
}

/** The arguments of `osslsigncode sign`, SHA-256 throughout. */
export function osslsigncodeArgs(options: AuthenticodeOptions, input: string, output: string): string[] {
  return [
    "sign",
    ...credentialArgs(options.credentials),
    "-h",
    "sha256",
    ...(options.description ? ["-n", options.description] : []),
    ...(options.url ? ["-i", options.url] : []),
    ...(options.timestampUrl ? ["-ts", options.timestampUrl] : []),
    "-in",
    input,
    "-out",
    output,
  ];
}

/**
 * Moves the signed file out of the private dir: a rename, or across file systems a copy beside
 * the destination renamed into place, so a reader never sees half a file.
 */
async function moveOut(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    const partial = `${to}.partial-${randomBytes(6).toString("hex")}`;
    await copyFile(from, partial);
    await rename(partial, to).catch(async (renameErr: unknown) => {
      await unlink(partial).catch(() => {});
      throw renameErr;
    });
  }
}

type Log = Pick<Logger, "warn">;

/** Runs osslsigncode in `dir` on a link to the input; throws the error its outcome maps to. */
async function runOsslsigncode(job: AuthenticodeJob, options: AuthenticodeOptions, dir: string, log: Log) {
  const ext = safeExtension(job.fileName);
  const input = join(dir, `input${ext}`);
  const output = join(dir, `signed${ext}`);
  await symlink(job.inputFile, input);
  const command = options.command ?? "osslsigncode";
  const timeoutMs = options.timeoutMs ?? AUTHENTICODE_TIMEOUT_MS;
  const secret = stdinSecret(options.credentials);
  const result = await runTool(command, osslsigncodeArgs(options, input, output), {
    cwd: dir,
    timeoutMs,
    stdin: secret === undefined ? "" : `${secret}\n`,
    env: toolEnvironment(options.credentials),
  }).catch((err: Error) => {
    throw new FormatSigningError(
      FORMAT,
      `cannot run ${command} (${(err as NodeJS.ErrnoException).code ?? err.message})`,
    );
  });
  if (result.exitCode === 0 && !result.timedOut) return output;
  log.warn(
    { format: FORMAT, exitCode: result.exitCode, timedOut: result.timedOut, stderr: result.stderr },
    "osslsigncode sign failed",
  );
  if (result.timedOut)
    throw new FormatSigningError(FORMAT, `osslsigncode did not finish within ${timeoutMs} ms`);
  const c = options.credentials;
  // A token that is not there (pulled, its HSM down) is this node's backend failing: the client
  // uploads again elsewhere. A wrong PIN or label stays a SIGNING_FAILED: the config is wrong.
  if (c.kind === "pkcs11" && TOKEN_ABSENT_MESSAGES.some((m) => result.stderr.includes(m)))
    throw new KeyBackendUnavailableError(pkcs11KeyUri(c), "osslsigncode cannot reach the token");
  if (result.stderr.toLowerCase().includes(UNSUPPORTED_MESSAGE)) {
    throw new UnsupportedInputError(
      FORMAT,
      "not a PE, MSI, CAB, CAT or PowerShell file osslsigncode can sign",
    );
  }
  throw new FormatSigningError(FORMAT, `osslsigncode exited with ${result.exitCode}`);
}

/**
 * Signs `job.inputFile` into `job.outputFile` (the whole signed file). The input is only read;
 * the output appears whole or not at all (it is written in the private dir, then moved).
 */
export async function signAuthenticode(
  job: AuthenticodeJob,
  options: AuthenticodeOptions,
  log: Log,
): Promise<void> {
  // A missing spool file would also read as "unsupported input" to osslsigncode: it is our failure.
  await stat(job.inputFile).catch((err: NodeJS.ErrnoException) => {
    throw new FormatSigningError(FORMAT, `the input file cannot be read (${err.code ?? err.message})`);
  });
  await withPrivateDir("authenticode-", options.tmpDir, async (dir) => {
    const output = await runOsslsigncode(job, options, dir, log);
    await moveOut(output, job.outputFile);
  });
}

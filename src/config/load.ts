import { closeSync, openSync, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { SigningClusterError } from "../errors.js";
import { type Config, configSchema, type SecretRef } from "./schema.js";

/** Every problem found in a configuration, so an operator fixes them all in one go. */
export class ConfigError extends SigningClusterError<"CONFIG_INVALID"> {
  constructor(readonly problems: string[]) {
    super("CONFIG_INVALID", `invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** A validated configuration with its secrets read. */
export interface LoadedConfig {
  config: Config;
  /** Token HMAC secrets by kid; the first entry signs new tokens. */
  tokenSecrets: { kid: string; secret: Buffer }[];
  gpgPassphrase: string | undefined;
  /** gpg-clearsign's key passphrase (the gpg one when both name the same secret). */
  clearsignPassphrase: string | undefined;
  /** The authenticode key's or PKCS#12 file's passphrase, read from its file or env var. */
  authenticodePassphrase: string | undefined;
  /** The user PIN of each format's PKCS#11 key, by format. */
  pkcs11Pins: Partial<Record<Pkcs11FormatName, string>>;
  redisPassword: string | undefined;
  /** What nodes present to each other to fetch whole-file results (`node.internalSecret`). */
  internalSecret: Buffer | undefined;
}

const ENV_PREFIX = "SIGNING__";

/** The formats whose key may be in a PKCS#11 token. */
const PKCS11_FORMATS = ["gpg", "gpg-clearsign", "sshsig", "minisign", "authenticode"] as const;
type Pkcs11FormatName = (typeof PKCS11_FORMATS)[number];

/**
 * `SIGNING__redis__url=redis://…` sets `redis.url`. Values that parse as JSON (numbers,
 * booleans, arrays) are taken as JSON, anything else as a string.
 */
export function applyEnvOverrides(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  prefix = ENV_PREFIX,
): void {
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(prefix) || value === undefined) continue;
    const path = name.slice(prefix.length).split("__");
    let node: Record<string, unknown> = raw;
    for (const key of path.slice(0, -1)) {
      const next = node[key];
      if (typeof next !== "object" || next === null || Array.isArray(next)) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path[path.length - 1] as string] = parseEnvValue(value);
  }
}

function parseEnvValue(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => `${i.path.length ? i.path.join(".") : "(top level)"}: ${i.message}`);
}

export function readSecret(
  ref: SecretRef,
  what: string,
  env: NodeJS.ProcessEnv,
  problems: string[],
): string | undefined {
  if (ref.env !== undefined) {
    const value = env[ref.env];
    if (value === undefined || value === "")
      problems.push(`${what}: environment variable ${ref.env} is not set`);
    return value;
  }
  const file = ref.file as string;
  try {
    return readFileSync(file, "utf8").replace(/\r?\n$/, "");
  } catch (e) {
    problems.push(`${what}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
    return undefined;
  }
}

const errno = (e: unknown) => (e as NodeJS.ErrnoException).code ?? "error";

/** Paths in the file are relative to the file, so a config directory can move as a whole. */
function absolutePaths(config: Config, baseDir: string): void {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  for (const s of config.token.secrets) if (s.file) s.file = abs(s.file);
  const { gpg, sshsig, minisign } = config.signing.formats;
  const clearsign = config.signing.formats["gpg-clearsign"];
  for (const f of [gpg, clearsign]) {
    if (f?.keyFile) f.keyFile = abs(f.keyFile);
    if (f?.passphrase?.file) f.passphrase.file = abs(f.passphrase.file);
  }
  if (sshsig?.keyFile) sshsig.keyFile = abs(sshsig.keyFile);
  if (minisign?.keyFile) minisign.keyFile = abs(minisign.keyFile);
  const authenticode = config.signing.formats.authenticode;
  for (const k of ["certFile", "keyFile", "pkcs12File"] as const) {
    const file = authenticode?.[k];
    if (authenticode && file) authenticode[k] = abs(file);
  }
  if (authenticode?.passphrase?.file) authenticode.passphrase.file = abs(authenticode.passphrase.file);
  for (const f of [gpg, clearsign, sshsig, minisign, authenticode]) {
    const k = f?.pkcs11;
    if (!k) continue;
    // A bare module name (libsofthsm2.so) is left to the dynamic loader's search path.
    if (k.module.includes("/")) k.module = abs(k.module);
    if (k.pin.file) k.pin.file = abs(k.pin.file);
    if ("publicKeyFile" in k && k.publicKeyFile) k.publicKeyFile = abs(k.publicKeyFile);
    if ("engine" in k) k.engine = abs(k.engine);
  }
  if (config.redis.password?.file) config.redis.password.file = abs(config.redis.password.file);
  if (config.tls) {
    config.tls.cert = abs(config.tls.cert);
    config.tls.key = abs(config.tls.key);
    if (config.tls.clientCa) config.tls.clientCa = abs(config.tls.clientCa);
    if (config.tls.peerCa) config.tls.peerCa = abs(config.tls.peerCa);
  }
  if (config.node.internalSecret?.file)
    config.node.internalSecret.file = abs(config.node.internalSecret.file);
  if (config.signing.spool.directory) config.signing.spool.directory = abs(config.signing.spool.directory);
  if (config.audit.file) config.audit.file = abs(config.audit.file);
}

/** TLS files readable, the audit log appendable, key files present. */
function checkFiles(config: Config, problems: string[]): void {
  for (const [what, file] of Object.entries(config.tls ?? {})) {
    try {
      readFileSync(file);
    } catch (e) {
      problems.push(`tls.${what}: cannot read ${file}: ${errno(e)}`);
    }
  }
  if (config.audit.file) {
    try {
      closeSync(openSync(config.audit.file, "a", 0o600));
    } catch (e) {
      problems.push(`audit.file: cannot append to ${config.audit.file}: ${errno(e)}`);
    }
  }
  for (const [name, f] of Object.entries(config.signing.formats)) {
    if (!f?.enabled || f.keyFile === undefined) continue;
    try {
      if (!statSync(f.keyFile).isFile())
        problems.push(`signing.formats.${name}.keyFile: ${f.keyFile} is not a file`);
    } catch {
      problems.push(`signing.formats.${name}.keyFile: ${f.keyFile} does not exist or cannot be read`);
    }
  }
}

/**
 * osslsigncode loads the PKCS#11 engine and module itself, per file: a missing one is refused
 * at start-up, not found by the first upload. (The certificate is read when the signer loads.)
 */
function checkAuthenticodePkcs11(config: Config, problems: string[]): void {
  const f = config.signing.formats.authenticode;
  if (!f?.enabled || !f.pkcs11) return;
  const files = [
    ["engine", f.pkcs11.engine, " (install libengine-pkcs11-openssl, or set its path)"],
    ["module", f.pkcs11.module, ""],
  ] as const;
  for (const [what, file, hint] of files) {
    if (what === "module" && !file.includes("/")) continue; // found by the dynamic loader
    if (!statSync(file, { throwIfNoEntry: false })?.isFile())
      problems.push(`signing.formats.authenticode.pkcs11.${what}: ${file} does not exist${hint}`);
  }
}

/** The authenticode key and PKCS#12 file (the certificate is public), when it is enabled. */
function authenticodePrivateFiles(config: Config): [string, string | undefined][] {
  const f = config.signing.formats.authenticode;
  if (!f?.enabled) return [];
  return [
    ["signing.formats.authenticode.keyFile", f.keyFile],
    ["signing.formats.authenticode.pkcs12File", f.pkcs12File],
    ["signing.formats.authenticode.passphrase", f.passphrase?.file],
    ["signing.formats.authenticode.pkcs11.pin", f.pkcs11?.pin.file],
  ];
}

/** Private keys and secrets others can read are refused: whoever reads them can sign. */
function checkPrivate(config: Config, problems: string[]): void {
  const formats = config.signing.formats;
  const keyFiles = (["gpg", "gpg-clearsign", "sshsig", "minisign"] as const).flatMap((name) => {
    const f = formats[name];
    if (!f?.enabled) return [];
    const passphrase = "passphrase" in f ? f.passphrase?.file : undefined;
    return [
      [`signing.formats.${name}.keyFile`, f.keyFile],
      [`signing.formats.${name}.passphrase`, passphrase],
      [`signing.formats.${name}.pkcs11.pin`, f.pkcs11?.pin.file],
    ] as [string, string | undefined][];
  });
  const privateFiles: [string, string | undefined][] = [
    ...config.token.secrets.map((s, i): [string, string | undefined] => [`token.secrets.${i}`, s.file]),
    ...keyFiles,
    ...authenticodePrivateFiles(config),
    ["redis.password", config.redis.password?.file],
    ["node.internalSecret", config.node.internalSecret?.file],
    ["tls.key", config.tls?.key],
  ];
  for (const [what, file] of privateFiles) {
    if (file === undefined) continue;
    const mode = (statSync(file, { throwIfNoEntry: false })?.mode ?? 0) & 0o777; // a missing file is reported where it is read
    if (mode & 0o077)
      problems.push(`${what}: ${file} is accessible to other users (mode ${mode.toString(8)}): chmod 600 it`);
  }
}

/**
 * The spool holds signed files until any node serves them: a directory only this user may
 * enter. A missing one is created (0700) at start; an existing one must already be private.
 */
function checkSpoolDirectory(config: Config, problems: string[]): void {
  const dir = config.signing.spool.directory;
  if (dir === undefined) return;
  const st = statSync(dir, { throwIfNoEntry: false });
  if (!st) return;
  const what = `signing.spool.directory: ${dir}`;
  if (!st.isDirectory()) problems.push(`${what} is not a directory`);
  else if (process.getuid && st.uid !== process.getuid())
    problems.push(`${what} belongs to another user (uid ${st.uid})`);
  else if (st.mode & 0o077)
    problems.push(
      `${what} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}): chmod 700 it`,
    );
}

/** `node.internalSecret`, at least 32 bytes like the token secrets. */
function internalSecretOf(config: Config, env: NodeJS.ProcessEnv, problems: string[]): Buffer | undefined {
  const ref = config.node.internalSecret;
  if (!ref) return undefined;
  const value = readSecret(ref, "node.internalSecret", env, problems);
  if (value === undefined) return undefined;
  if (Buffer.byteLength(value) < 32) problems.push("node.internalSecret: secret must be at least 32 bytes");
  return Buffer.from(value);
}

/** The token secrets by kid: each at least 32 bytes, kids unique. */
function tokenSecretsOf(
  config: Config,
  env: NodeJS.ProcessEnv,
  problems: string[],
): LoadedConfig["tokenSecrets"] {
  const kids = new Set<string>();
  const out: LoadedConfig["tokenSecrets"] = [];
  config.token.secrets.forEach((s, i) => {
    if (kids.has(s.kid)) problems.push(`token.secrets.${i}.kid: duplicate kid "${s.kid}"`);
    kids.add(s.kid);
    const value = readSecret(s, `token.secrets.${i}`, env, problems);
    if (value === undefined) return;
    if (Buffer.byteLength(value) < 32) problems.push(`token.secrets.${i}: secret must be at least 32 bytes`);
    out.push({ kid: s.kid, secret: Buffer.from(value) });
  });
  return out;
}

/** Validates a raw configuration object and reads its secrets; throws ConfigError listing every problem. */
export function buildConfig(
  raw: unknown,
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): LoadedConfig {
  const rawObject = typeof raw === "object" && raw !== null ? structuredClone(raw) : {};
  applyEnvOverrides(rawObject as Record<string, unknown>, env);
  const parsed = configSchema.safeParse(rawObject);
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error));
  const config = parsed.data;
  absolutePaths(config, baseDir);
  const problems: string[] = [];
  checkFiles(config, problems);
  checkPrivate(config, problems);
  checkSpoolDirectory(config, problems);
  checkAuthenticodePkcs11(config, problems);
  const internalSecret = internalSecretOf(config, env, problems);
  const tokenSecrets = tokenSecretsOf(config, env, problems);
  const passphraseOf = (name: "gpg" | "gpg-clearsign" | "authenticode") => {
    const f = config.signing.formats[name];
    return f?.enabled && f.passphrase
      ? readSecret(f.passphrase, `signing.formats.${name}.passphrase`, env, problems)
      : undefined;
  };
  const gpgPassphrase = passphraseOf("gpg");
  const clearsignPassphrase = passphraseOf("gpg-clearsign");
  const authenticodePassphrase = passphraseOf("authenticode");
  const redisPassword = config.redis.password
    ? readSecret(config.redis.password, "redis.password", env, problems)
    : undefined;
  const pkcs11Pins: LoadedConfig["pkcs11Pins"] = {};
  for (const name of PKCS11_FORMATS) {
    const f = config.signing.formats[name];
    if (f?.enabled && f.pkcs11)
      pkcs11Pins[name] = readSecret(f.pkcs11.pin, `signing.formats.${name}.pkcs11.pin`, env, problems);
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    config,
    tokenSecrets,
    gpgPassphrase,
    clearsignPassphrase,
    authenticodePassphrase,
    pkcs11Pins,
    redisPassword,
    internalSecret,
  };
}

/** Reads a YAML or JSON file (JSON is YAML), applies env overrides, validates. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError([
      `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`,
    ]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError([`${file} is not valid YAML/JSON: ${(e as Error).message.split("\n")[0]}`]);
  }
  return buildConfig(raw, dirname(resolve(file)), env);
}

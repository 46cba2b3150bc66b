import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { type DevKeys, generateDevKeys } from "../src/signing/dev-keys.js";
import { hashPassword } from "../src/tokens/credentials.js";
import { type DevCodeSigning, devCodeSigning } from "./dev-code-signing.js";
import { SoftHsmToken } from "./softhsm.js";

/** Everything a local cluster (npm start) or a test needs: keys, secrets, credentials, a config. */
export interface DevState {
  dir: string;
  /** The node configuration, written to `configFile`; paths in it are absolute. */
  config: Record<string, unknown>;
  configFile: string;
  issuer: { user: string; password: string; passwordFile: string };
  keys: DevKeys;
  /** With `authenticode`: the dev CA verifiers trust, and the certificate that signs. */
  codeSigning?: DevCodeSigning;
  /** With `keys: "softhsm"`: the token holding both formats' keys (nodes need its SOFTHSM2_CONF). */
  token?: SoftHsmToken;
}

/**
 * Where the dev keys live: `file` (the default: a newcomer needs no HSM) or `softhsm`, a
 * SoftHSM2 token in the state dir holding an Ed25519 key per format (the pkcs11 backend).
 */
export type DevKeyBackend = "file" | "softhsm";

/** Both formats' keys in a SoftHSM2 token of the state dir, made once and reused. */
function softHsmFormats(dir: string): { token: SoftHsmToken; formats: Record<string, unknown> } {
  const pin = readOrCreate(join(dir, "softhsm-pin"), () =>
    String(randomBytes(4).readUInt32BE()).padStart(10, "0"),
  );
  const token = SoftHsmToken.openOrCreate(join(dir, "softhsm"), {
    label: "signing-dev",
    pin,
    keys: [
      { label: "gpg", id: "01", type: "EC:edwards25519" },
      { label: "sshsig", id: "02", type: "EC:edwards25519" },
    ],
  });
  const key = (label: string) => ({
    module: token.module,
    tokenLabel: token.label,
    keyLabel: label,
    pin: { file: token.pinFile },
  });
  const formats = {
    gpg: {
      pkcs11: {
        ...key("gpg"),
        userId: `signing-cluster dev key (SoftHSM2) <dev@signing.invalid>`,
        createdAt: "2026-01-01T00:00:00Z",
      },
    },
    sshsig: { pkcs11: { ...key("sshsig"), comment: "dev@signing.invalid" }, namespace: "file" },
  };
  return { token, formats };
}

export const DEV_ISSUER = "build-master";

function readOrCreate(file: string, make: () => string): string {
  if (!existsSync(file)) writeFileSync(file, `${make()}\n`, { mode: 0o600 });
  return readFileSync(file, "utf8").trim();
}

/** What else a dev state signs. */
export interface DevStateOptions {
  /**
   * Authenticode with a dev CA made by openssl in `<dir>/code-signing` (npm start; tests that
   * sign it): off by default, as it costs two RSA key generations and needs osslsigncode.
   */
  authenticode?: boolean;
  /**
   * Sign only these formats (default: every one above): a benchmark comparing this tree with an
   * older build runs a config the older build accepts.
   */
  formats?: readonly string[];
}

/** `formats` without the ones `keep` leaves out. */
function onlyFormats(formats: Record<string, unknown>, keep?: readonly string[]): Record<string, unknown> {
  return keep ? Object.fromEntries(Object.entries(formats).filter(([name]) => keep.includes(name))) : formats;
}

/**
 * Creates (once) and reuses the dev keys, token secret and issuer password in `dir`, and writes
 * a node config pointing at `redisUrl`. Re-running keeps the same keys, so signatures made on a
 * previous run still verify against the same public keys.
 */
export async function prepareDevState(
  dir: string,
  redisUrl: string,
  backend: DevKeyBackend = "file",
  opts: DevStateOptions = {},
): Promise<DevState> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keys = await generateDevKeys(join(dir, "keys"));
  const secretFile = join(dir, "token-secret");
  readOrCreate(secretFile, () => randomBytes(32).toString("hex"));
  const hsm = backend === "softhsm" ? softHsmFormats(dir) : undefined;
  const codeSigning = opts.authenticode ? devCodeSigning(join(dir, "code-signing")) : undefined;
  const internalSecretFile = join(dir, "internal-secret");
  readOrCreate(internalSecretFile, () => randomBytes(32).toString("hex"));
  const passwordFile = join(dir, "issuer-password.txt");
  const password = readOrCreate(passwordFile, () => randomBytes(18).toString("base64url"));

  const config: Record<string, unknown> = {
    // Plain HTTP on loopback: development only (production serves tls).
    node: { host: "127.0.0.1", port: 0, allowPlaintext: true, internalSecret: { file: internalSecretFile } },
    audit: { file: join(dir, "audit.log") },
    redis: { url: redisUrl },
    token: {
      secrets: [{ kid: "dev1", file: secretFile }],
      issuers: ["127.0.0.0/8", "::1/128"],
      credentials: [{ user: DEV_ISSUER, passwordHash: await hashPassword(password) }],
    },
    signing: {
      formats: onlyFormats(
        hsm?.formats ?? {
          gpg: { keyFile: keys.gpg.keyFile, passphrase: { file: keys.gpg.passphraseFile } },
          // The same OpenPGP key signs detached and clearsigned.
          "gpg-clearsign": { keyFile: keys.gpg.keyFile, passphrase: { file: keys.gpg.passphraseFile } },
          sshsig: { keyFile: keys.sshsig.keyFile, namespace: "file" },
          minisign: { keyFile: keys.minisign.keyFile },
          ...(codeSigning
            ? { authenticode: { certFile: codeSigning.certFile, keyFile: codeSigning.keyFile } }
            : {}),
        },
        opts.formats,
      ),
    },
    log: { level: "info" },
  };
  const configFile = join(dir, "node.yaml");
  writeFileSync(
    configFile,
    `# Generated by npm start for the local cluster; see config/local.example.yaml.\n${stringify(config)}`,
    { mode: 0o600 },
  );
  const issuer = { user: DEV_ISSUER, password, passwordFile };
  return {
    dir,
    config,
    configFile,
    issuer,
    keys,
    ...(hsm ? { token: hsm.token } : {}),
    ...(codeSigning ? { codeSigning } : {}),
  };
}

/**
 * The local cluster's monitor configuration: snapshots in `<dir>/monitor`, watching `nodes`,
 * alerting to `alerts` (the monitor refuses to start without a destination or
 * `{ enabled: false }`).
 */
export function writeMonitorConfig(
  dir: string,
  redisUrl: string,
  nodes: string[],
  port: number,
  alerts: Record<string, unknown>,
): { config: Record<string, unknown>; configFile: string } {
  const config: Record<string, unknown> = {
    monitor: { host: "127.0.0.1", port, stateDir: join(dir, "monitor"), snapshotCron: "*/2 * * * * *" },
    redis: { url: redisUrl },
    nodes,
    // spike.ratio and spike.minChecksPerSecond stay at their defaults: the Prometheus rule's.
    spike: { scrapeCron: "*/5 * * * * *", forSeconds: 30 },
    alerts,
    log: { level: "info" },
  };
  const configFile = join(dir, "monitor.yaml");
  writeFileSync(
    configFile,
    `# Generated by npm start for the local cluster's monitor.\n${stringify(config)}`,
    { mode: 0o600 },
  );
  return { config, configFile };
}

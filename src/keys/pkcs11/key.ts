import { createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { SigningKey } from "../key.js";
import type { SigningPool } from "../pool.js";
import { newModuleLockBuffer } from "./module-lock.js";
import type { OpenedKey, Pkcs11KeySpec } from "./token.js";

/** A key in a PKCS#11 token (the `pkcs11` backend). */
export interface Pkcs11KeyOptions {
  /** The module (shared library) path, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  module: string;
  tokenLabel: string;
  keyLabel?: string;
  /** CKA_ID, hex. */
  keyId?: string;
  /** Already read from its file or env var by the config loader. */
  pin: string;
  /** PEM public key; without it, the token's public key object of the same label or id. */
  publicKeyFile?: string;
  /** Longest a PKCS#11 call may take before it counts as a failure. */
  timeoutMs: number;
}

/** Names the key, never the PIN: for logs and start-up errors. */
export function pkcs11Location(o: Pick<Pkcs11KeyOptions, "tokenLabel" | "keyLabel" | "keyId">): string {
  const key = o.keyLabel !== undefined ? `label "${o.keyLabel}"` : `id ${o.keyId}`;
  return `PKCS#11 token "${o.tokenLabel}" key ${key}`;
}

async function publicKeySpki(file: string | undefined): Promise<Uint8Array | undefined> {
  if (file === undefined) return undefined;
  let pem: string;
  try {
    pem = await readFile(file, "utf8");
  } catch (err) {
    throw new Error(
      `cannot read public key file ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  try {
    return createPublicKey(pem).export({ format: "der", type: "spki" });
  } catch (err) {
    throw new Error(`public key file ${file} is not a PEM public key (${(err as Error).message})`);
  }
}

/** Each module's lock, and how many keys of it are open in this process (the last one finalizes it). */
const modules = new Map<string, { lock: SharedArrayBuffer; keys: number }>();

function useModule(path: string): { lock: SharedArrayBuffer; release(): boolean } {
  let m = modules.get(path);
  if (!m) {
    m = { lock: newModuleLockBuffer(), keys: 0 };
    modules.set(path, m);
  }
  m.keys++;
  const used = m;
  return {
    lock: used.lock,
    release: () => --used.keys === 0,
  };
}

function keySpec(o: Pkcs11KeyOptions, spki: Uint8Array | undefined): Pkcs11KeySpec {
  return {
    tokenLabel: o.tokenLabel,
    pin: o.pin,
    ...(o.keyLabel !== undefined ? { keyLabel: o.keyLabel } : {}),
    ...(o.keyId !== undefined ? { keyId: o.keyId } : {}),
    ...(spki ? { publicKeySpki: spki } : {}),
  };
}

/**
 * Opens the key in every thread of the signing pool, each with its own session: logs in,
 * finds the private key (refused if the token would let it out), reads or takes its public
 * key, checks a probe signature. Throws an Error whose message is the reason, for the one
 * start-up line.
 */
export async function openPkcs11Key(o: Pkcs11KeyOptions, pool: SigningPool): Promise<SigningKey> {
  const spki = await publicKeySpki(o.publicKeyFile);
  const module = useModule(o.module);
  const key = pool.newKeyId();
  let closed: Promise<void> | undefined;
  const close = () => {
    pool.forget(key);
    closed ??= pool
      .everyThread({ op: "pkcs11-close", key, finalize: module.release() }, { timeoutMs: o.timeoutMs })
      .then(() => {})
      .catch(() => {});
    return closed;
  };
  let opened: OpenedKey;
  try {
    const request = {
      op: "pkcs11-open",
      key,
      module: o.module,
      lock: module.lock,
      spec: keySpec(o, spki),
    } as const;
    [opened] = (await pool.everyThread(request, { timeoutMs: o.timeoutMs, remember: key })) as [OpenedKey];
  } catch (err) {
    await close();
    throw err;
  }
  return {
    backend: "pkcs11",
    algorithm: opened.algorithm,
    publicKey: createPublicKey({ key: Buffer.from(opened.publicKeySpki), format: "der", type: "spki" }),
    location: pkcs11Location(o),
    async sign(input: Buffer): Promise<Buffer> {
      return Buffer.from(await pool.run({ op: "pkcs11-sign", key, input }, o.timeoutMs));
    },
    available: () => true,
    check: async () => ({ ok: true, detail: "not checked" }),
    close,
  };
}

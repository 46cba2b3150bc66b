import { createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { SigningKey } from "../key.js";
import { Pkcs11Host } from "./host.js";
import type { OpenedKey } from "./token.js";

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

/**
 * Opens the key in its module's worker thread: logs in, finds the private key (refused if the
 * token would let it out), reads or takes its public key, checks a probe signature. Throws an
 * Error whose message is the reason, for the one start-up line.
 */
export async function openPkcs11Key(o: Pkcs11KeyOptions): Promise<SigningKey> {
  const spki = await publicKeySpki(o.publicKeyFile);
  const host = Pkcs11Host.acquire(o.module);
  let opened: { key: number } & OpenedKey;
  try {
    const spec = {
      tokenLabel: o.tokenLabel,
      pin: o.pin,
      ...(o.keyLabel !== undefined ? { keyLabel: o.keyLabel } : {}),
      ...(o.keyId !== undefined ? { keyId: o.keyId } : {}),
      ...(spki ? { publicKeySpki: spki } : {}),
    };
    opened = await host.call({ op: "open", spec }, o.timeoutMs);
  } catch (err) {
    await host.release();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    backend: "pkcs11",
    algorithm: opened.algorithm,
    publicKey: createPublicKey({ key: Buffer.from(opened.publicKeySpki), format: "der", type: "spki" }),
    location: pkcs11Location(o),
    async sign(input: Buffer): Promise<Buffer> {
      const sig = await host.call<Uint8Array>({ op: "sign", key: opened.key, input }, o.timeoutMs);
      return Buffer.from(sig);
    },
    available: () => true,
    check: async () => ({ ok: true, detail: "not checked" }),
    close() {
      closed ??= host
        .call({ op: "close", key: opened.key }, o.timeoutMs)
        .catch(() => {})
        .then(() => host.release());
      return closed;
    },
  };
}

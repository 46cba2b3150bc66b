import { withBreaker } from "../keys/breaker.js";
import { KeyLoadError, type SigningKey } from "../keys/key.js";
import { type KeyWrapper, observed } from "../keys/observed.js";
import { openPkcs11Key, type Pkcs11KeyOptions, pkcs11Location } from "../keys/pkcs11/key.js";
import type { FormatName, KeyBackendContext, KeyConfigs, Signer } from "./signer.js";
import { loadAuthenticodeSigner } from "./signers/authenticode.js";
import { gpgSignerForKey, loadGpgSigner } from "./signers/gpg.js";
import { loadMinisignSigner, minisignSignerForKey } from "./signers/minisign.js";
import { loadSshsigSigner, sshsigSignerForKey } from "./signers/sshsig.js";

/** Keys of the enabled formats only. */
export type EnabledKeys = Partial<KeyConfigs>;

/** Every signature of `format`'s key, the start-up self-check included, reported to ctx.observe. */
function observing(format: FormatName, ctx: KeyBackendContext): KeyWrapper {
  return (key) => observed(key, (result, seconds) => ctx.observe(format, key.backend, result, seconds));
}

/** Opens a PKCS#11 key behind its own breaker; a failure is the one start-up line naming it. */
async function pkcs11Key(
  format: FormatName,
  o: Pkcs11KeyOptions,
  ctx: KeyBackendContext,
): Promise<SigningKey> {
  try {
    // Wrapped below into the one start-up line naming the key.
    if (!ctx.pool)
      throw new Error("PKCS#11 keys sign in the signing pool: signing.workers must be at least 1");
    return observing(
      format,
      ctx,
    )(withBreaker(await openPkcs11Key(o, ctx.pool), format, ctx.breaker, ctx.log));
  } catch (err) {
    throw new KeyLoadError(format, pkcs11Location(o), (err as Error).message);
  }
}

/** A signer whose key is closed again if building the signer around it fails. */
async function around(
  key: SigningKey,
  build: (key: SigningKey) => Promise<Signer> | Signer,
): Promise<Signer> {
  try {
    return await build(key);
  } catch (err) {
    await key.close();
    throw err;
  }
}

async function loadOne(format: FormatName, keys: EnabledKeys, ctx: KeyBackendContext): Promise<Signer> {
  switch (format) {
    case "gpg":
    case "gpg-clearsign": {
      const cfg = keys[format] as KeyConfigs["gpg"];
      if (!("pkcs11" in cfg))
        return loadGpgSigner(cfg, { wrap: observing(format, ctx), pool: ctx.pool }, format);
      const key = await pkcs11Key(format, cfg.pkcs11, ctx);
      return around(key, (k) => gpgSignerForKey(k, cfg, format));
    }
    case "minisign": {
      const cfg = keys.minisign as KeyConfigs["minisign"];
      if (!("pkcs11" in cfg))
        return loadMinisignSigner(cfg, { wrap: observing(format, ctx), pool: ctx.pool });
      const key = await pkcs11Key(format, cfg.pkcs11, ctx);
      return around(key, (k) => minisignSignerForKey(k));
    }
    case "authenticode":
      return loadAuthenticodeSigner(keys.authenticode as KeyConfigs["authenticode"], ctx.log);
    case "sshsig": {
      const cfg = keys.sshsig as KeyConfigs["sshsig"];
      if (!("pkcs11" in cfg)) return loadSshsigSigner(cfg, { wrap: observing(format, ctx), pool: ctx.pool });
      const key = await pkcs11Key(format, cfg.pkcs11, ctx);
      return around(key, (k) => sshsigSignerForKey(k, cfg.namespace, cfg.comment));
    }
  }
}

/** Every format this build signs, in the order they are loaded and listed. */
export const FORMATS: readonly FormatName[] = ["gpg", "gpg-clearsign", "sshsig", "minisign", "authenticode"];

/**
 * Loads every enabled format's key once; throws KeyLoadError naming the key that failed, after
 * closing the keys already open.
 */
export async function loadSigners(
  keys: EnabledKeys,
  ctx: KeyBackendContext,
): Promise<Map<FormatName, Signer>> {
  const signers = new Map<FormatName, Signer>();
  const formats = FORMATS.filter((f) => keys[f] !== undefined);
  try {
    for (const format of formats) signers.set(format, await loadOne(format, keys, ctx));
  } catch (err) {
    await closeSigners(signers);
    throw err;
  }
  return signers;
}

export async function closeSigners(signers: ReadonlyMap<FormatName, Signer>): Promise<void> {
  await Promise.allSettled([...signers.values()].map((s) => s.close()));
}

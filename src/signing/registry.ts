import type { FormatName, KeyConfigs, Signer } from "./signer.js";
import { loadGpgSigner } from "./signers/gpg.js";
import { loadSshsigSigner } from "./signers/sshsig.js";

/** Keys of the enabled formats only. */
export type EnabledKeys = Partial<KeyConfigs>;

/** Loads every enabled format's key once; throws KeyLoadError naming the key that failed. */
export async function loadSigners(keys: EnabledKeys): Promise<Map<FormatName, Signer>> {
  const signers = new Map<FormatName, Signer>();
  if (keys.gpg) signers.set("gpg", await loadGpgSigner(keys.gpg));
  if (keys.sshsig) signers.set("sshsig", await loadSshsigSigner(keys.sshsig));
  return signers;
}

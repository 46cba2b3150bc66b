import type { Overrides } from "../../scripts/in-process-cluster.js";
import type { SoftHsmToken } from "../../scripts/softhsm.js";

/** When the tests' HSM OpenPGP keys were made: fixes the fingerprint the node derives. */
export const HSM_KEY_CREATED_AT = "2026-01-01T00:00:00Z";

/**
 * Config overrides with gpg and sshsig both in the token `t` (by key label), the file keys out
 * of the config, the other formats off, and a key breaker quick enough for tests; `extra` goes
 * into `signing` beside them.
 */
export function hsmFormats(
  t: SoftHsmToken,
  gpgLabel: string,
  sshLabel: string,
  extra: Overrides = {},
): Overrides {
  const pkcs11 = (label: string) => ({
    module: t.module,
    tokenLabel: t.label,
    keyLabel: label,
    pin: { file: t.pinFile },
  });
  return {
    signing: {
      keyBreaker: { resetTimeoutMs: 300, volumeThreshold: 2 },
      formats: {
        gpg: {
          keyFile: undefined,
          passphrase: undefined,
          pkcs11: {
            ...pkcs11(gpgLabel),
            userId: "HSM Release <hsm@signing.invalid>",
            createdAt: HSM_KEY_CREATED_AT,
          },
        },
        sshsig: { keyFile: undefined, pkcs11: { ...pkcs11(sshLabel), comment: "hsm@signing.invalid" } },
        "gpg-clearsign": { enabled: false },
        minisign: { enabled: false },
      },
      ...extra,
    },
  };
}

/**
 * Finds which key of an OpenPGP certificate a raw key is, so an OpenPGP format signs as that
 * key (algorithm id, fingerprint), and a raw key that is in no way the certificate's is refused
 * at start-up instead of making signatures no one can verify.
 */

import * as openpgp from "openpgp";
import {
  PUBKEY_ED25519,
  PUBKEY_EDDSA_LEGACY,
  PUBKEY_RSA_ENCRYPT_SIGN,
  PUBKEY_RSA_SIGN,
} from "../openpgp-packet.js";
import type { OpenPgpKeyIdentity } from "./openpgp-signature.js";
import { FormatKeyError, type RawSigningKey } from "./raw-key.js";

type KeyPacket = openpgp.Key["keyPacket"] | openpgp.Subkey["keyPacket"];

/** The public material of a key packet in the encoding of the raw key's JWK ("x", or "n" and "e"). */
function packetJwkPart(packet: KeyPacket): string | undefined {
  const params = packet.publicParams as Record<string, Uint8Array>;
  const b64 = (bytes: Uint8Array | undefined) => (bytes ? Buffer.from(bytes).toString("base64url") : "");
  switch (packet.algorithm as number) {
    case PUBKEY_EDDSA_LEGACY: // Q: 0x40, then the 32-byte public key
      return b64(params.Q?.subarray(1));
    case PUBKEY_ED25519:
      return b64(params.A);
    case PUBKEY_RSA_ENCRYPT_SIGN:
    case PUBKEY_RSA_SIGN:
      return `${b64(params.n)}.${b64(params.e)}`;
    default:
      return undefined;
  }
}

function rawKeyJwkPart(key: RawSigningKey): string {
  const jwk = key.publicKey.export({ format: "jwk" });
  return key.algorithm === "ed25519" ? String(jwk.x) : `${jwk.n}.${jwk.e}`;
}

/** The identity of the primary key or subkey of `armoredPublicKey` whose public key is `key`'s. */
export async function openPgpIdentityOf(
  format: string,
  armoredPublicKey: string,
  key: RawSigningKey,
): Promise<OpenPgpKeyIdentity> {
  let cert: openpgp.Key;
  try {
    cert = await openpgp.readKey({ armoredKey: armoredPublicKey });
  } catch (err) {
    throw new FormatKeyError(format, `not an armored OpenPGP public key (${(err as Error).message})`);
  }
  const wanted = rawKeyJwkPart(key);
  const packets: KeyPacket[] = [cert.keyPacket, ...cert.subkeys.map((s) => s.keyPacket)];
  const match = packets.find((p) => p.version === 4 && packetJwkPart(p) === wanted);
  if (!match) {
    throw new FormatKeyError(
      format,
      `the key is none of the v4 keys of OpenPGP certificate ${cert.getFingerprint().toUpperCase()}`,
    );
  }
  return {
    pubkeyAlgorithm: match.algorithm as number,
    fingerprint: match.getFingerprintBytes() as Uint8Array,
  };
}

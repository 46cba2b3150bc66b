import {
  constants,
  createHash,
  createPrivateKey,
  type Hash,
  type KeyObject,
  privateEncrypt,
  sign,
} from "node:crypto";
import { readFile } from "node:fs/promises";
import * as openpgp from "openpgp";
import {
  armorSignature,
  hashedSuffix,
  mpi,
  PUBKEY_ED25519,
  PUBKEY_EDDSA_LEGACY,
  PUBKEY_RSA_ENCRYPT_SIGN,
  PUBKEY_RSA_SIGN,
  SHA256_DIGEST_INFO,
  type SignatureParams,
  signaturePacket,
} from "../openpgp-packet.js";
import { type GpgKeyConfig, KeyLoadError, type Signer } from "../signer.js";

/** Signs a SHA-256 digest; returns the algorithm-specific fields of the signature packet. */
type DigestSigner = (digest: Buffer) => Promise<Buffer>;

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");

function ed25519Key(seed: Uint8Array, publicKey: Uint8Array): KeyObject {
  return createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: b64url(seed), x: b64url(publicKey) },
    format: "jwk",
  });
}

/** Synchronous on purpose: ~40 µs, less than handing the call to libuv's thread pool costs. */
async function signEd25519(key: KeyObject, digest: Buffer): Promise<Buffer> {
  return sign(null, digest, key);
}

const big = (bytes: Uint8Array) => BigInt(`0x${Buffer.from(bytes).toString("hex") || "0"}`);
function bigBytes(n: bigint): Buffer {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
}

/** OpenPGP stores d, p, q and u = p⁻¹ mod q; a JWK wants the CRT values with qi = q⁻¹ mod p, so p and q swap. */
function rsaKey(pub: { n: Uint8Array; e: Uint8Array }, priv: Record<string, Uint8Array>): KeyObject {
  const { d, p, q, u } = priv as { d: Uint8Array; p: Uint8Array; q: Uint8Array; u: Uint8Array };
  const D = big(d);
  return createPrivateKey({
    key: {
      kty: "RSA",
      n: b64url(pub.n),
      e: b64url(pub.e),
      d: b64url(d),
      p: b64url(q),
      q: b64url(p),
      dp: b64url(bigBytes(D % (big(q) - 1n))),
      dq: b64url(bigBytes(D % (big(p) - 1n))),
      qi: b64url(u),
    },
    format: "jwk",
  });
}

/** The native signing function for the key's algorithm, or the reason it is not supported. */
function digestSigner(packet: openpgp.SecretKeyPacket | openpgp.SecretSubkeyPacket): DigestSigner | string {
  const pub = packet.publicParams as Record<string, unknown>;
  const priv = packet.privateParams as Record<string, Uint8Array>;
  switch (packet.algorithm as number) {
    case PUBKEY_EDDSA_LEGACY: {
      const Q = pub.Q as Uint8Array;
      // Q is 0x40 followed by the 32-byte Ed25519 public key.
      if (Q.length !== 33 || Q[0] !== 0x40) return "EdDSA key on a curve other than Ed25519";
      const key = ed25519Key(priv.seed as Uint8Array, Q.subarray(1));
      return async (digest) => {
        const sig = await signEd25519(key, digest);
        return Buffer.concat([mpi(sig.subarray(0, 32)), mpi(sig.subarray(32))]);
      };
    }
    case PUBKEY_ED25519: {
      const key = ed25519Key(priv.seed as Uint8Array, pub.A as Uint8Array);
      return (digest) => signEd25519(key, digest);
    }
    case PUBKEY_RSA_ENCRYPT_SIGN:
    case PUBKEY_RSA_SIGN: {
      const key = rsaKey(pub as { n: Uint8Array; e: Uint8Array }, priv);
      const padding = constants.RSA_PKCS1_PADDING;
      // PKCS#1 v1.5 over the DigestInfo: privateEncrypt with type-1 padding is exactly that signature.
      return async (digest) =>
        mpi(privateEncrypt({ key, padding }, Buffer.concat([SHA256_DIGEST_INFO, digest])));
    }
    default:
      return `public-key algorithm ${openpgp.enums.read(openpgp.enums.publicKey, packet.algorithm)} (supported: Ed25519, RSA)`;
  }
}

async function loadKey(cfg: GpgKeyConfig, fail: (reason: string) => never): Promise<openpgp.PrivateKey> {
  let armored: string;
  try {
    armored = await readFile(cfg.keyFile, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return fail(code === "ENOENT" ? "file not found" : `cannot read file (${code ?? "error"})`);
  }
  let key: openpgp.PrivateKey;
  try {
    key = await openpgp.readPrivateKey({ armoredKey: armored });
  } catch (err) {
    return fail(`not an armored OpenPGP private key (${(err as Error).message})`);
  }
  if (key.isDecrypted()) return key;
  if (cfg.passphrase === undefined || cfg.passphrase === "") {
    return fail("the key is passphrase-protected but no passphrase was configured");
  }
  try {
    return await openpgp.decryptKey({ privateKey: key, passphrase: cfg.passphrase });
  } catch {
    // openpgp's message is not echoed: the reason must never risk carrying the passphrase.
    return fail("wrong passphrase, or the key cannot be decrypted");
  }
}

/**
 * Loads and decrypts the OpenPGP key once (openpgp.js), then signs natively: a v4 binary
 * signature with SHA-256 over the input's running hash, armored. The first signature is checked
 * with openpgp.js at start-up, so a key this code reads wrongly stops the node instead of
 * producing bad signatures.
 */
export async function loadGpgSigner(cfg: GpgKeyConfig): Promise<Signer> {
  const fail = (reason: string): never => {
    throw new KeyLoadError("gpg", cfg.keyFile, reason);
  };
  const key = await loadKey(cfg, fail);
  let signingKey: Awaited<ReturnType<openpgp.PrivateKey["getSigningKey"]>>;
  try {
    signingKey = await key.getSigningKey();
  } catch (err) {
    return fail(`no usable signing key (${(err as Error).message})`);
  }
  const packet = signingKey.keyPacket as openpgp.SecretKeyPacket | openpgp.SecretSubkeyPacket;
  if (packet.version !== 4) fail(`a v${packet.version} key: only v4 keys are supported`);
  const signDigest = digestSigner(packet);
  if (typeof signDigest === "string") return fail(signDigest);
  // The primary key's expiry bounds its subkeys'; openpgp.sign used to refuse past it, so must we.
  const expiries = [
    await key.getExpirationTime(),
    signingKey === key ? null : await signingKey.getExpirationTime(),
  ];
  const ends = expiries.filter((d): d is Date => d instanceof Date).map((d) => d.getTime());
  const expiresAt = ends.length ? new Date(Math.min(...ends)) : undefined;
  const fingerprintBytes = packet.getFingerprintBytes() as Uint8Array;
  const keyId = fingerprintBytes.subarray(12);
  const publicArmored = key.toPublic().armor();

  const signer: Signer = {
    format: "gpg",
    fingerprint: key.getFingerprint().toUpperCase(),
    suffix: ".asc",
    ...(expiresAt ? { expiresAt } : {}),
    publicKey: () => publicArmored,
    async sign(inputSha256: Hash): Promise<Buffer> {
      if (expiresAt && Date.now() >= expiresAt.getTime())
        throw new Error(`the signing key expired at ${expiresAt.toISOString()}`);
      const params: SignatureParams = {
        pubkeyAlgorithm: packet.algorithm as number,
        fingerprint: fingerprintBytes,
        keyId,
        created: new Date(),
      };
      const { hashedFields, trailer } = hashedSuffix(params);
      const digest = inputSha256.copy().update(hashedFields).update(trailer).digest();
      const binary = signaturePacket(params, hashedFields, digest, await signDigest(digest));
      return Buffer.from(armorSignature(binary), "utf8");
    },
  };

  const probe = Buffer.from("signing-cluster start-up self-check");
  const armoredSignature = (await signer.sign(createHash("sha256").update(probe))).toString("utf8");
  try {
    const { signatures } = await openpgp.verify({
      message: await openpgp.createMessage({ binary: probe }),
      signature: await openpgp.readSignature({ armoredSignature }),
      verificationKeys: key.toPublic(),
    });
    const [first] = signatures;
    if (!first) throw new Error("no signature read back");
    await first.verified;
  } catch (err) {
    return fail(`a test signature with this key does not verify (${(err as Error).message})`);
  }
  return signer;
}

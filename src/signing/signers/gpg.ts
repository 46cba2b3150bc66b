import { createHash, createPrivateKey, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import * as openpgp from "openpgp";
import { SigningClusterError } from "../../errors.js";
import { fileKey } from "../../keys/file.js";
import type { SigningKey } from "../../keys/key.js";
import { asIs } from "../../keys/observed.js";
import { publicParts } from "../../keys/public-parts.js";
import { clearsign, cleartextLines } from "../formats/gpg-clearsign.js";
import {
  armoredPublicKey,
  armorSignature,
  hashedSuffix,
  PUBKEY_ED25519,
  PUBKEY_EDDSA_LEGACY,
  PUBKEY_RSA_ENCRYPT_SIGN,
  PUBKEY_RSA_SIGN,
  type SignatureParams,
  signatureFields,
  signaturePacket,
  v4PublicKey,
} from "../openpgp-packet.js";
import {
  type FileKeyOptions,
  type GpgKeyConfig,
  KeyLoadError,
  type Signer,
  type SignInput,
} from "../signer.js";

/** The two OpenPGP formats over one key: a detached signature, or the clearsigned text. */
export type OpenPgpFormat = "gpg" | "gpg-clearsign";

/** What a v4 OpenPGP signature names of its key, and what verifiers are given. */
interface OpenPgpIdentity {
  pubkeyAlgorithm: number;
  /** v4 fingerprint of the signing (sub)key. */
  fingerprintBytes: Uint8Array;
  /** Fingerprint of the primary key, upper-case hex: the signer's cache identity. */
  fingerprint: string;
  publicArmored: string;
  expiresAt?: Date;
}

const b64url = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");

function ed25519Key(seed: Uint8Array, publicKey: Uint8Array): KeyObject {
  return createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: b64url(seed), x: b64url(publicKey) },
    format: "jwk",
  });
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

/** The private key of an OpenPGP secret key packet as a node KeyObject, or why it is not supported. */
function privateKeyObject(packet: openpgp.SecretKeyPacket | openpgp.SecretSubkeyPacket): KeyObject | string {
  const pub = packet.publicParams as Record<string, unknown>;
  const priv = packet.privateParams as Record<string, Uint8Array>;
  switch (packet.algorithm as number) {
    case PUBKEY_EDDSA_LEGACY: {
      const Q = pub.Q as Uint8Array;
      // Q is 0x40 followed by the 32-byte Ed25519 public key.
      if (Q.length !== 33 || Q[0] !== 0x40) return "EdDSA key on a curve other than Ed25519";
      return ed25519Key(priv.seed as Uint8Array, Q.subarray(1));
    }
    case PUBKEY_ED25519:
      return ed25519Key(priv.seed as Uint8Array, pub.A as Uint8Array);
    case PUBKEY_RSA_ENCRYPT_SIGN:
    case PUBKEY_RSA_SIGN:
      return rsaKey(pub as { n: Uint8Array; e: Uint8Array }, priv);
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

function refuseExpired(expiresAt: Date | undefined): void {
  // The route refuses uploads once the key expired; this catches one that expired meanwhile.
  if (expiresAt && Date.now() >= expiresAt.getTime())
    throw new SigningClusterError("KEY_EXPIRED", `the signing key expired at ${expiresAt.toISOString()}`);
}

/**
 * A gpg signer over any key: a v4 binary signature with SHA-256 over the input's running hash,
 * armored; the key signs the digest and this builds the packet around its raw signature.
 */
function gpgSigner(key: SigningKey, id: OpenPgpIdentity): Signer {
  const { expiresAt, fingerprintBytes, pubkeyAlgorithm } = id;
  const keyId = fingerprintBytes.subarray(12);
  return {
    format: "gpg",
    fingerprint: id.fingerprint,
    kind: "detached",
    suffix: ".asc",
    needs: {},
    contentType: "application/pgp-signature",
    key,
    ...(expiresAt ? { expiresAt } : {}),
    publicKey: () => id.publicArmored,
    async sign(input: SignInput): Promise<Buffer> {
      refuseExpired(expiresAt);
      const params: SignatureParams = {
        pubkeyAlgorithm,
        fingerprint: fingerprintBytes,
        keyId,
        created: new Date(),
      };
      const { hashedFields, trailer } = hashedSuffix(params);
      const digest = input.sha256.copy().update(hashedFields).update(trailer).digest();
      const fields = signatureFields(pubkeyAlgorithm, await key.sign(digest));
      return Buffer.from(armorSignature(signaturePacket(params, hashedFields, digest, fields)), "utf8");
    },
    close: () => key.close(),
  };
}

/**
 * The cleartext signer over the same kind of key (an apt `InRelease`): it needs the whole text,
 * which the upload pipeline keeps for it (bounded by the format's maxSize).
 */
function clearsignSigner(key: SigningKey, id: OpenPgpIdentity): Signer {
  const { expiresAt } = id;
  const identity = { pubkeyAlgorithm: id.pubkeyAlgorithm, fingerprint: id.fingerprintBytes };
  return {
    ...gpgSigner(key, id),
    format: "gpg-clearsign",
    kind: "clearsigned",
    suffix: ".asc",
    needs: { bytes: true },
    contentType: "text/plain; charset=utf-8",
    accept(input: SignInput): void {
      if (input.bytes) cleartextLines(input.bytes);
    },
    async sign(input: SignInput): Promise<Buffer> {
      refuseExpired(expiresAt);
      if (!input.bytes) throw new Error("gpg-clearsign was given no text: its needs were not met");
      return clearsign(input.bytes, key, identity);
    },
  };
}

/** The signer of `format` over `key`, checked with a detached probe signature first. */
async function openPgpSigner(
  format: OpenPgpFormat,
  key: SigningKey,
  id: OpenPgpIdentity,
  fail: (reason: string) => never,
): Promise<Signer> {
  const detached = gpgSigner(key, id);
  await selfCheck(detached, fail);
  return format === "gpg" ? detached : clearsignSigner(key, id);
}

/**
 * Signs a probe and verifies it with openpgp.js against the public key verifiers get, so a key
 * this code reads or encodes wrongly stops the node instead of producing bad signatures.
 */
async function selfCheck(signer: Signer, fail: (reason: string) => never): Promise<void> {
  const probe = Buffer.from("signing-cluster start-up self-check");
  const input = { sha256: createHash("sha256").update(probe), fileName: "probe" };
  const armoredSignature = (await signer.sign(input)).toString("utf8");
  try {
    const { signatures } = await openpgp.verify({
      message: await openpgp.createMessage({ binary: probe }),
      signature: await openpgp.readSignature({ armoredSignature }),
      verificationKeys: await openpgp.readKey({ armoredKey: signer.publicKey() }),
    });
    const [first] = signatures;
    if (!first) throw new Error("no signature read back");
    await first.verified;
  } catch (err) {
    return fail(`a test signature with this key does not verify (${(err as Error).message})`);
  }
}

/**
 * Loads and decrypts the OpenPGP key file once (openpgp.js); the node then signs natively
 * (the file backend, as `wrap` returns it), checked once at start-up.
 */
export async function loadGpgSigner(
  cfg: GpgKeyConfig,
  { wrap = asIs, pool }: FileKeyOptions = {},
  format: OpenPgpFormat = "gpg",
): Promise<Signer> {
  const fail = (reason: string): never => {
    throw new KeyLoadError(format, cfg.keyFile, reason);
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
  const privateKey = privateKeyObject(packet);
  if (typeof privateKey === "string") return fail(privateKey);
  // The primary key's expiry bounds its subkeys'; openpgp.sign used to refuse past it, so must we.
  const expiries = [
    await key.getExpirationTime(),
    signingKey === key ? null : await signingKey.getExpirationTime(),
  ];
  const ends = expiries.filter((d): d is Date => d instanceof Date).map((d) => d.getTime());
  const expiresAt = ends.length ? new Date(Math.min(...ends)) : undefined;
  const id: OpenPgpIdentity = {
    pubkeyAlgorithm: packet.algorithm as number,
    fingerprintBytes: packet.getFingerprintBytes() as Uint8Array,
    fingerprint: key.getFingerprint().toUpperCase(),
    publicArmored: key.toPublic().armor(),
    ...(expiresAt ? { expiresAt } : {}),
  };
  return openPgpSigner(format, wrap(await fileKey(privateKey, cfg.keyFile, pool)), id, fail);
}

/** The OpenPGP identity of a key held elsewhere (PKCS#11): what gpg needs to import and trust it. */
export interface GpgIdentityConfig {
  /** The certified user ID, e.g. "Release Signing <release@example.com>". */
  userId: string;
  /** The key's OpenPGP creation time: part of its fingerprint, so it must never change. */
  createdAt: Date;
}

/**
 * A gpg signer over a key whose private half the node never holds: the OpenPGP public key
 * (and so the fingerprint) is built from its public key and the configured creation time, with
 * the user ID certified by the key itself, then checked like a file key.
 */
export async function gpgSignerForKey(
  key: SigningKey,
  identity: GpgIdentityConfig,
  format: OpenPgpFormat = "gpg",
): Promise<Signer> {
  const fail = (reason: string): never => {
    throw new KeyLoadError(format, key.location, reason);
  };
  const pub = v4PublicKey(publicParts(key.algorithm, key.publicKey), identity.createdAt);
  const publicArmored = await armoredPublicKey(pub, identity.userId, identity.createdAt, async (digest) =>
    signatureFields(pub.algorithm, await key.sign(digest)),
  );
  const id: OpenPgpIdentity = {
    pubkeyAlgorithm: pub.algorithm,
    fingerprintBytes: pub.fingerprint,
    fingerprint: pub.fingerprint.toString("hex").toUpperCase(),
    publicArmored,
  };
  return openPgpSigner(format, key, id, fail);
}

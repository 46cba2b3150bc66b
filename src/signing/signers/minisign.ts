import { createPrivateKey, type KeyObject, verify } from "node:crypto";
import { readFile } from "node:fs/promises";
import { fileKey } from "../../keys/file.js";
import type { SigningKey } from "../../keys/key.js";
import { asIs } from "../../keys/observed.js";
import {
  MINISIGN_SUFFIX,
  minisigNamesFile,
  minisignHasher,
  minisignKeyId,
  minisignKeyIdHex,
  minisignPublicKey,
  signMinisign,
} from "../formats/minisign.js";
import { requireAlgorithm } from "../formats/raw-key.js";
import {
  type FileKeyOptions,
  KeyLoadError,
  type MinisignKeyConfig,
  type Signer,
  type SignInput,
} from "../signer.js";

/**
 * Signs a probe and checks both of its signatures against the public key verifiers get, so a
 * key this code encodes wrongly stops the node instead of producing signatures that fail.
 */
async function selfCheck(signer: Signer, publicKey: KeyObject, fail: (reason: string) => never) {
  const digest = minisignHasher().update("signing-cluster start-up self-check").digest();
  const lines = (await signer.sign({ sha256: minisignHasher(), blake2b512: digest, fileName: "probe" }))
    .toString("utf8")
    .split("\n");
  const sig = Buffer.from(lines[1] ?? "", "base64").subarray(10);
  const trusted = (lines[2] ?? "").replace(/^trusted comment: /, "");
  const global = Buffer.from(lines[3] ?? "", "base64");
  const ok =
    verify(null, digest, publicKey, sig) &&
    verify(null, Buffer.concat([sig, Buffer.from(trusted)]), publicKey, global);
  if (!ok) fail("a test signature with this key does not verify");
}

/**
 * A minisign signer over any Ed25519 key (file or PKCS#11): pre-hashed signatures over the
 * BLAKE2b-512 the upload pipeline computes as the file arrives, with a trusted comment naming it.
 */
export async function minisignSignerForKey(key: SigningKey): Promise<Signer> {
  const fail = (reason: string): never => {
    throw new KeyLoadError("minisign", key.location, reason);
  };
  try {
    requireAlgorithm("minisign", key, ["ed25519"]);
  } catch (err) {
    fail((err as Error).message);
  }
  const keyId = minisignKeyId(key.publicKey);
  const publicKeyText = minisignPublicKey(key, keyId);
  const signer: Signer = {
    format: "minisign",
    fingerprint: minisignKeyIdHex(keyId),
    suffix: MINISIGN_SUFFIX,
    kind: "detached",
    needs: { blake2b512: true },
    contentType: "text/plain",
    key,
    publicKey: () => publicKeyText,
    async sign(input: SignInput): Promise<Buffer> {
      if (!input.blake2b512)
        throw new Error("minisign was given no BLAKE2b-512 digest: its needs were not met");
      return signMinisign(key, input.blake2b512, { fileName: input.fileName, keyId });
    },
    serves: (output, input) => minisigNamesFile(output, input.fileName),
    close: () => key.close(),
  };
  await selfCheck(signer, key.publicKey, fail);
  return signer;
}

/** Loads an unencrypted PKCS#8 PEM Ed25519 key file once (the file backend, as `wrap` returns it). */
export async function loadMinisignSigner(
  cfg: MinisignKeyConfig,
  { wrap = asIs, pool }: FileKeyOptions = {},
): Promise<Signer> {
  const fail = (reason: string): never => {
    throw new KeyLoadError("minisign", cfg.keyFile, reason);
  };
  let pem: string;
  try {
    pem = await readFile(cfg.keyFile, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return fail(code === "ENOENT" ? "file not found" : `cannot read file (${code ?? "error"})`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    return fail(`not an unencrypted PEM private key (${(err as Error).message})`);
  }
  if (privateKey.asymmetricKeyType !== "ed25519")
    return fail(`an ${privateKey.asymmetricKeyType} key: minisign signs with Ed25519`);
  return minisignSignerForKey(wrap(await fileKey(privateKey, cfg.keyFile, pool)));
}

import { createHash, createPrivateKey, type KeyObject, randomBytes } from "node:crypto";

/** An ed25519 key read from an unencrypted `openssh-key-v1` private key file. */
export interface OpenSshEd25519Key {
  /** SSH wire format public key: string "ssh-ed25519" + string pub32. */
  publicKeyBlob: Buffer;
  privateKey: KeyObject;
  comment: string;
}

const PEM_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----";
const PEM_END = "-----END OPENSSH PRIVATE KEY-----";
const AUTH_MAGIC = Buffer.from("openssh-key-v1\0", "latin1");
const KEY_TYPE = "ssh-ed25519";

/** Encodes an SSH wire-format `string`: uint32 length + bytes. */
export function sshString(data: Buffer | string): Buffer {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

/** Encodes an SSH wire-format `uint32`. */
export function sshUint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** Wraps base64 text at `width` columns. */
export function wrapBase64(b64: string, width = 70): string {
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += width) lines.push(b64.slice(i, i + width));
  return lines.join("\n");
}

/** Reads SSH wire-format fields one after another. */
export class SshReader {
  private pos = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}

  uint32(): number {
    if (this.pos + 4 > this.buf.length) throw new Error(`truncated ${this.what}`);
    const n = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return n;
  }

  bytes(): Buffer {
    const len = this.uint32();
    if (this.pos + len > this.buf.length) throw new Error(`truncated ${this.what}`);
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  string(): string {
    return this.bytes().toString("utf8");
  }

  rest(): Buffer {
    const out = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return out;
  }
}

function ed25519PublicKeyBlob(pub32: Buffer): Buffer {
  return Buffer.concat([sshString(KEY_TYPE), sshString(pub32)]);
}

/** The unencrypted private section of an openssh-key-v1 file, after its check ints, and the outer public key. */
function privateSection(pem: string): { outerPublic: Buffer; priv: SshReader } {
  const begin = pem.indexOf(PEM_BEGIN);
  const end = pem.indexOf(PEM_END);
  if (begin < 0 || end < begin) {
    throw new Error("not an OpenSSH private key (expected -----BEGIN OPENSSH PRIVATE KEY-----)");
  }
  const body = pem.slice(begin + PEM_BEGIN.length, end).replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw new Error("not an OpenSSH private key (invalid base64)");
  const raw = Buffer.from(body, "base64");
  if (raw.length < AUTH_MAGIC.length || !raw.subarray(0, AUTH_MAGIC.length).equals(AUTH_MAGIC)) {
    throw new Error("not an OpenSSH private key (missing openssh-key-v1 magic)");
  }
  const r = new SshReader(raw.subarray(AUTH_MAGIC.length), "OpenSSH private key");
  const cipher = r.string();
  const kdf = r.string();
  r.bytes(); // kdf options
  if (cipher !== "none" || kdf !== "none") {
    throw new Error("encrypted OpenSSH keys are not supported; use an unencrypted key file with mode 0600");
  }
  const nkeys = r.uint32();
  if (nkeys !== 1) throw new Error(`expected exactly one key in the file, found ${nkeys}`);
  const outerPublic = r.bytes();
  const priv = new SshReader(r.bytes(), "OpenSSH private key section");
  const check1 = priv.uint32();
  const check2 = priv.uint32();
  if (check1 !== check2) throw new Error("checkint mismatch (corrupt key file)");
  return { outerPublic, priv };
}

function checkPadding(priv: SshReader): void {
  const padding = priv.rest();
  for (let i = 0; i < padding.length; i++) {
    if (padding[i] !== i + 1) throw new Error("invalid padding (corrupt key file)");
  }
}

/** Parses an unencrypted openssh-key-v1 ed25519 private key. Throws a plain Error with the reason. */
export function parseOpenSshEd25519(pem: string): OpenSshEd25519Key {
  const { outerPublic, priv } = privateSection(pem);
  const keyType = priv.string();
  if (keyType !== KEY_TYPE) throw new Error(`unsupported key type ${keyType}; only ssh-ed25519 is supported`);
  return ed25519Section(outerPublic, priv);
}

function ed25519Section(outerPublic: Buffer, priv: SshReader): OpenSshEd25519Key {
  const pub32 = priv.bytes();
  const priv64 = priv.bytes();
  const comment = priv.string();
  checkPadding(priv);
  if (pub32.length !== 32) throw new Error("invalid ed25519 public key length");
  if (priv64.length !== 64) throw new Error("invalid ed25519 private key length");
  if (!priv64.subarray(32).equals(pub32)) throw new Error("ed25519 private and public key do not match");
  const publicKeyBlob = ed25519PublicKeyBlob(Buffer.from(pub32));
  if (!outerPublic.equals(publicKeyBlob)) throw new Error("public key does not match the private key");
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({
      key: {
        kty: "OKP",
        crv: "Ed25519",
        d: priv64.subarray(0, 32).toString("base64url"),
        x: pub32.toString("base64url"),
      },
      format: "jwk",
    });
  } catch (err) {
    throw new Error(`invalid ed25519 key material: ${(err as Error).message}`);
  }
  return { publicKeyBlob, privateKey, comment };
}

/** n, e, d, iqmp, p, q as ssh-keygen writes them; JWK also wants d mod (p-1) and d mod (q-1). */
function rsaSection(priv: SshReader): { privateKey: KeyObject; comment: string } {
  const [n, e, d, iqmp, p, q] = Array.from({ length: 6 }, () => priv.bytes());
  const comment = priv.string();
  checkPadding(priv);
  const big = (b: Buffer) => BigInt(`0x${b.toString("hex") || "0"}`);
  const unsigned = (b: Buffer) => (b[0] === 0 ? b.subarray(1) : b);
  const b64 = (v: bigint) => {
    const hex = v.toString(16);
    return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex").toString("base64url");
  };
  const [dv, pv, qv] = [big(d as Buffer), big(p as Buffer), big(q as Buffer)];
  const jwk = {
    kty: "RSA",
    ...{ n: unsigned(n as Buffer).toString("base64url"), e: unsigned(e as Buffer).toString("base64url") },
    ...{ d: b64(dv), p: b64(pv), q: b64(qv), dp: b64(dv % (pv - 1n)), dq: b64(dv % (qv - 1n)) },
    qi: b64(big(iqmp as Buffer)),
  };
  try {
    return { privateKey: createPrivateKey({ key: jwk, format: "jwk" }), comment };
  } catch (err) {
    throw new Error(`invalid RSA key material: ${(err as Error).message}`);
  }
}

/**
 * Parses an unencrypted openssh-key-v1 private key, ssh-ed25519 or ssh-rsa; the public key
 * blob is the file's own. Throws a plain Error with the reason.
 */
export function parseOpenSshKey(pem: string): { privateKey: KeyObject; comment: string } {
  const { outerPublic, priv } = privateSection(pem);
  const keyType = priv.string();
  if (keyType === KEY_TYPE) return ed25519Section(outerPublic, priv);
  if (keyType === "ssh-rsa") return rsaSection(priv);
  throw new Error(`unsupported key type ${keyType}; ssh-ed25519 and ssh-rsa are supported`);
}

/** Writes an ed25519 KeyObject as an unencrypted openssh-key-v1 PEM, as `ssh-keygen -N ''` does. */
export function encodeOpenSshEd25519(privateKey: KeyObject, comment: string): string {
  if (privateKey.type !== "private" || privateKey.asymmetricKeyType !== "ed25519") {
    throw new Error("expected an ed25519 private key");
  }
  const jwk = privateKey.export({ format: "jwk" });
  if (!jwk.d || !jwk.x) throw new Error("cannot export ed25519 key material");
  const seed = Buffer.from(jwk.d, "base64url");
  const pub32 = Buffer.from(jwk.x, "base64url");
  const publicKeyBlob = ed25519PublicKeyBlob(pub32);
  const checkint = randomBytes(4);
  let section = Buffer.concat([
    checkint,
    checkint,
    sshString(KEY_TYPE),
    sshString(pub32),
    sshString(Buffer.concat([seed, pub32])),
    sshString(comment),
  ]);
  const padLen = (8 - (section.length % 8)) % 8;
  const pad = Buffer.alloc(padLen);
  for (let i = 0; i < padLen; i++) pad[i] = i + 1;
  section = Buffer.concat([section, pad]);
  const raw = Buffer.concat([
    AUTH_MAGIC,
    sshString("none"),
    sshString("none"),
    sshString(""),
    sshUint32(1),
    sshString(publicKeyBlob),
    sshString(section),
  ]);
  return `${PEM_BEGIN}\n${wrapBase64(raw.toString("base64"))}\n${PEM_END}\n`;
}

/** The OpenSSH public key line: "ssh-ed25519 AAAA... comment". */
export function publicKeyLine(blob: Buffer, comment: string): string {
  const line = `${KEY_TYPE} ${blob.toString("base64")}`;
  return comment ? `${line} ${comment}` : line;
}

/** The OpenSSH fingerprint of a public key blob: "SHA256:" + unpadded base64 of its sha256. */
export function sshFingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/**
 * The PKCS#11 calls of one module, made inside the signing pool's worker threads
 * (../pool-worker.ts): every call blocks, and none runs on the node's event loop. Only handles, public attributes and
 * signatures cross into JavaScript: nothing here asks a token for a private key's value, and a
 * key the token would let out (extractable, or not sensitive) is refused.
 */
import { createHash, createPublicKey, type KeyObject, publicDecrypt, verify } from "node:crypto";
import pkcs11js from "pkcs11js";
import { SigningClusterError } from "../../errors.js";
import type { KeyAlgorithm } from "../key.js";
import { algorithmOfPublicKey, publicKeyFromParts } from "../public-parts.js";
import { SHA256_DIGEST_INFO } from "../rsa.js";
import type { ModuleLock } from "./module-lock.js";

/** Which key to use, and how to log in; the PIN stays in the worker. */
export interface Pkcs11KeySpec {
  tokenLabel: string;
  /** CKA_LABEL of the private key (and of its public key object). */
  keyLabel?: string;
  /** CKA_ID of the private key, hex. */
  keyId?: string;
  pin: string;
  /** DER SubjectPublicKeyInfo from a configured public key file; else the token's public key object. */
  publicKeySpki?: Uint8Array;
}

export interface OpenedKey {
  algorithm: KeyAlgorithm;
  publicKeySpki: Uint8Array;
}

/**
 * A reason a PKCS#11 key cannot be used, fit for a log line: never the PIN. Raised in the
 * worker; its message is what the main thread turns into KEY_LOAD_FAILED at start-up or
 * KEY_BACKEND_UNAVAILABLE at run time.
 */
export class Pkcs11Failure extends SigningClusterError<"KEY_BACKEND_UNAVAILABLE"> {
  constructor(reason: string) {
    super("KEY_BACKEND_UNAVAILABLE", reason);
  }
}

const CKM_EDDSA = 0x1057; // PKCS#11 3.0; pkcs11js (2.40) does not name it
const CKK_EC_EDWARDS = 0x40;
const MECHANISMS: Record<KeyAlgorithm, number> = {
  ed25519: CKM_EDDSA,
  "ecdsa-p256": pkcs11js.CKM_ECDSA,
  // CKM_RSA_PKCS over a DigestInfo we build: the token signs the digest the format computed.
  "rsa-pkcs1-sha256": pkcs11js.CKM_RSA_PKCS,
};
const P256_OID = Buffer.from("06082a8648ce3d030107", "hex");
const ED25519_PARAMS = [Buffer.from("06032b6570", "hex"), Buffer.from("130c656477617264733235353139", "hex")];
const PROBE = createHash("sha256").update("signing-cluster PKCS#11 probe").digest();

function ckr(err: unknown): string {
  const e = err as { message?: string };
  return (e?.message ?? String(err)).split("\n")[0] ?? "error";
}

/** CKA_EC_POINT is a DER OCTET STRING around the point in PKCS#11 ≥ 2.20; some modules send it bare. */
function unwrapEcPoint(value: Buffer, rawLength: number): Buffer {
  if (value.length === rawLength + 2 && value[0] === 0x04 && value[1] === rawLength) return value.subarray(2);
  return value;
}

/** A key's session and handles, while connected. */
interface Connected {
  session: Buffer;
  handle: Buffer;
  algorithm: KeyAlgorithm;
  publicKey: KeyObject;
}

class TokenKey {
  connected: Connected | undefined;
  constructor(readonly spec: Pkcs11KeySpec) {}

  describe(): string {
    const { keyLabel, keyId } = this.spec;
    return keyLabel !== undefined ? `label "${keyLabel}"` : `id ${keyId}`;
  }

  template(cls: number): pkcs11js.Template {
    const t: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: cls }];
    if (this.spec.keyLabel !== undefined) t.push({ type: pkcs11js.CKA_LABEL, value: this.spec.keyLabel });
    if (this.spec.keyId !== undefined)
      t.push({ type: pkcs11js.CKA_ID, value: Buffer.from(this.spec.keyId, "hex") });
    return t;
  }
}

/** What `ModuleSessions.sessions()` reports of one open session, for tests and diagnosis. */
export interface SessionReport {
  key: number;
  /** The session handle, hex: distinct per thread and key. */
  session: string;
  /** CK_STATE from C_GetSessionInfo: 1 (CKS_RO_USER_FUNCTIONS) while logged in. */
  state: number;
}

const RETRY = Symbol("retry");

/**
 * One PKCS#11 module as one signing worker thread sees it: the module is initialized once per
 * process (ModuleLock orders C_Initialize and C_Finalize against every thread's calls), and
 * this thread holds its own session per key, so the pool's threads sign in parallel. A failed
 * call is tried once more on a fresh session (CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED,
 * CKR_TOKEN_NOT_PRESENT…); if that fails too, the module is finalized, so the next call
 * initializes it again: a module may only see a token that came back (SoftHSM2 after its
 * directory returned, a network HSM after a restart) after a fresh C_Initialize.
 */
export class ModuleSessions {
  private lib: pkcs11js.PKCS11 | undefined;
  /** The module generation this thread's sessions were opened in. */
  private generation = -1;
  private readonly keys = new Map<number, TokenKey>();

  constructor(
    private readonly modulePath: string,
    private readonly lock: ModuleLock,
  ) {}

  private loaded(): pkcs11js.PKCS11 {
    if (!this.lib) {
      const lib = new pkcs11js.PKCS11();
      try {
        lib.load(this.modulePath);
      } catch (err) {
        throw new Pkcs11Failure(`cannot load PKCS#11 module ${this.modulePath} (${ckr(err)})`);
      }
      this.lib = lib;
    }
    return this.lib;
  }

  private initialize(lib: pkcs11js.PKCS11): void {
    this.lock.exclusive((l) => {
      if (this.lock.initialized) return;
      try {
        // Several threads call into the module at once: it must lock with the OS's primitives.
        lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
      } catch (err) {
        if ((err as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)
          throw new Pkcs11Failure(`C_Initialize of ${this.modulePath} failed (${ckr(err)})`);
      }
      l.setInitialized(true);
    });
  }

  /** fn on an initialized module, this thread's sessions of an earlier generation forgotten. */
  private call<T>(fn: (lib: pkcs11js.PKCS11) => T): T {
    const lib = this.loaded();
    for (;;) {
      if (!this.lock.initialized) this.initialize(lib);
      const result = this.lock.shared(() => {
        if (!this.lock.initialized) return RETRY;
        if (this.generation !== this.lock.generation) {
          // C_Finalize closed every session of the process: the handles are dead.
          for (const key of this.keys.values()) key.connected = undefined;
          this.generation = this.lock.generation;
        }
        return { value: fn(lib) };
      });
      if (result !== RETRY) return result.value;
    }
  }

  /**
   * Registers key `id` in this thread and opens its session; throws Pkcs11Failure with the
   * reason it cannot be used. The key stays registered either way: a thread that starts while
   * the token is away connects on its first signature.
   */
  open(id: number, spec: Pkcs11KeySpec): OpenedKey {
    const key = new TokenKey(spec);
    this.keys.set(id, key);
    const c = this.call(() => this.connect(key));
    return { algorithm: c.algorithm, publicKeySpki: c.publicKey.export({ format: "der", type: "spki" }) };
  }

  sign(id: number, input: Buffer): Buffer {
    const key = this.keys.get(id);
    if (!key) throw new Pkcs11Failure(`no key ${id} is open`);
    try {
      return this.call(() => this.signOnce(key.connected ?? this.connect(key), input));
    } catch {
      try {
        return this.call(() => {
          this.closeSession(key);
          return this.signOnce(this.connect(key), input);
        });
      } catch (err) {
        this.finalize(this.generation);
        throw err instanceof Pkcs11Failure ? err : new Pkcs11Failure(`signing failed (${ckr(err)})`);
      }
    }
  }

  close(id: number): void {
    const key = this.keys.get(id);
    this.keys.delete(id);
    // Never initializes the module just to close: a session of an earlier generation is gone anyway.
    this.lock.shared(() => {
      if (key && this.lock.initialized && this.generation === this.lock.generation) this.closeSession(key);
    });
  }

  /**
   * Finalizes the module for the whole process, once per generation: when `generation` is the
   * current one (another thread may have done it already), or always when undefined (the
   * process's last key of this module closed).
   */
  finalize(generation?: number): void {
    this.lock.exclusive((l) => {
      if (!this.lock.initialized) return;
      if (generation !== undefined && generation !== this.lock.generation) return;
      try {
        this.loaded().C_Finalize();
      } catch {
        // Finalizing a module whose token is gone may fail; it is initialized again anyway.
      }
      l.setInitialized(false);
    });
  }

  /** This thread's open sessions, as the module reports them. */
  sessions(): SessionReport[] {
    return this.call((lib) =>
      [...this.keys]
        .filter(([, key]) => key.connected)
        .map(([id, key]) => {
          const session = (key.connected as Connected).session;
          return { key: id, session: session.toString("hex"), state: lib.C_GetSessionInfo(session).state };
        }),
    );
  }

  private closeSession(key: TokenKey): void {
    const c = key.connected;
    key.connected = undefined;
    try {
      if (c) this.lib?.C_CloseSession(c.session);
    } catch {
      // A session the token already dropped.
    }
  }

  private signOnce(c: Connected, input: Buffer): Buffer {
    const lib = this.loaded();
    lib.C_SignInit(c.session, { mechanism: MECHANISMS[c.algorithm], parameter: null as never }, c.handle);
    const data = c.algorithm === "rsa-pkcs1-sha256" ? Buffer.concat([SHA256_DIGEST_INFO, input]) : input;
    return Buffer.from(lib.C_Sign(c.session, data, Buffer.alloc(1024)));
  }

  /** Session, login, the private key, its algorithm and public key, then a probe signature checked. */
  private connect(key: TokenKey): Connected {
    const lib = this.loaded();
    const session = lib.C_OpenSession(this.slotOf(lib, key.spec.tokenLabel), pkcs11js.CKF_SERIAL_SESSION);
    try {
      this.login(lib, session, key.spec.pin);
      const handle = this.findOne(lib, session, key, pkcs11js.CKO_PRIVATE_KEY, "private");
      const algorithm = this.privateKeyAlgorithm(lib, session, handle);
      const publicKey = key.spec.publicKeySpki
        ? createPublicKey({ key: Buffer.from(key.spec.publicKeySpki), format: "der", type: "spki" })
        : this.tokenPublicKey(lib, session, key, algorithm);
      const ofPublic = algorithmOfPublicKey(publicKey);
      if (ofPublic !== algorithm)
        throw new Pkcs11Failure(`the public key is ${ofPublic} but the private key is ${algorithm}`);
      const c = { session, handle, algorithm, publicKey };
      if (!probeVerifies(c, this.signOnce(c, probeInput(algorithm))))
        throw new Pkcs11Failure("a probe signature does not verify with the public key: wrong public key?");
      key.connected = c;
      return c;
    } catch (err) {
      try {
        lib.C_CloseSession(session);
      } catch {}
      throw err instanceof Pkcs11Failure ? err : new Pkcs11Failure(ckr(err));
    }
  }

  private slotOf(lib: pkcs11js.PKCS11, label: string): Buffer {
    const present = lib.C_GetSlotList(true).map((slot) => ({
      slot,
      label: lib.C_GetTokenInfo(slot).label.trim(),
    }));
    const found = present.find((p) => p.label === label);
    if (!found) {
      // An empty label is SoftHSM2's free slot, a token not initialized: no use naming it.
      const seen =
        present
          .filter((p) => p.label)
          .map((p) => `"${p.label}"`)
          .join(", ") || "none";
      throw new Pkcs11Failure(`no token labelled "${label}" (tokens present: ${seen})`);
    }
    return found.slot;
  }

  private login(lib: pkcs11js.PKCS11, session: Buffer, pin: string): void {
    try {
      lib.C_Login(session, pkcs11js.CKU_USER, pin);
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (code === pkcs11js.CKR_USER_ALREADY_LOGGED_IN) return;
      if (code === pkcs11js.CKR_PIN_INCORRECT) throw new Pkcs11Failure("wrong PIN (CKR_PIN_INCORRECT)");
      if (code === pkcs11js.CKR_PIN_LOCKED) throw new Pkcs11Failure("the PIN is locked (CKR_PIN_LOCKED)");
      throw new Pkcs11Failure(`login failed (${ckr(err)})`);
    }
  }

  private findOne(lib: pkcs11js.PKCS11, session: Buffer, key: TokenKey, cls: number, what: string): Buffer {
    lib.C_FindObjectsInit(session, key.template(cls));
    const found = lib.C_FindObjects(session, 2);
    lib.C_FindObjectsFinal(session);
    const where = `on token "${key.spec.tokenLabel}"`;
    if (found.length === 0) throw new Pkcs11Failure(`no ${what} key with ${key.describe()} ${where}`);
    if (found.length > 1)
      throw new Pkcs11Failure(`more than one ${what} key with ${key.describe()} ${where}: give keyId too`);
    return found[0] as Buffer;
  }

  /** The key type, and the refusal of a key the token would let out. */
  private privateKeyAlgorithm(lib: pkcs11js.PKCS11, session: Buffer, handle: Buffer): KeyAlgorithm {
    const [type, extractable, sensitive] = lib
      .C_GetAttributeValue(session, handle, [
        { type: pkcs11js.CKA_KEY_TYPE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_SENSITIVE },
      ])
      .map((a) => a.value as Buffer);
    if (extractable?.[0] !== 0 || sensitive?.[0] !== 1)
      throw new Pkcs11Failure(
        "the private key may leave the token (CKA_EXTRACTABLE true or CKA_SENSITIVE false): generate it in the token as sensitive and non-extractable",
      );
    const keyType = type?.readUIntLE(0, Math.min(6, type.length));
    if (keyType === pkcs11js.CKK_RSA) return "rsa-pkcs1-sha256";
    const [params] = lib.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_EC_PARAMS }]);
    const p = params?.value as Buffer;
    if (keyType === CKK_EC_EDWARDS && ED25519_PARAMS.some((e) => e.equals(p))) return "ed25519";
    if (keyType === pkcs11js.CKK_EC && P256_OID.equals(p)) return "ecdsa-p256";
    throw new Pkcs11Failure(
      `key type ${keyType} with these parameters is not supported (Ed25519, ECDSA P-256, RSA)`,
    );
  }

  private tokenPublicKey(lib: pkcs11js.PKCS11, session: Buffer, key: TokenKey, algorithm: KeyAlgorithm) {
    const handle = this.findOne(lib, session, key, pkcs11js.CKO_PUBLIC_KEY, "public");
    if (algorithm === "rsa-pkcs1-sha256") {
      const [n, e] = lib
        .C_GetAttributeValue(session, handle, [
          { type: pkcs11js.CKA_MODULUS },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT },
        ])
        .map((a) => a.value as Buffer);
      return publicKeyFromParts({ algorithm, n: n as Buffer, e: e as Buffer });
    }
    const [point] = lib.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_EC_POINT }]);
    const raw = unwrapEcPoint(point?.value as Buffer, algorithm === "ed25519" ? 32 : 65);
    return publicKeyFromParts({ algorithm, point: raw });
  }
}

function probeInput(algorithm: KeyAlgorithm): Buffer {
  return algorithm === "ed25519" ? Buffer.from("signing-cluster PKCS#11 probe") : PROBE;
}

/** The probe's preimage is known, so every algorithm's signature can be checked with node's crypto. */
function probeVerifies(c: Connected, signature: Buffer): boolean {
  try {
    switch (c.algorithm) {
      case "ed25519":
        return verify(null, probeInput("ed25519"), c.publicKey, signature);
      case "ecdsa-p256":
        return verify(
          "sha256",
          Buffer.from("signing-cluster PKCS#11 probe"),
          { key: c.publicKey, dsaEncoding: "ieee-p1363" },
          signature,
        );
      case "rsa-pkcs1-sha256":
        return publicDecrypt(c.publicKey, signature).equals(Buffer.concat([SHA256_DIGEST_INFO, PROBE]));
    }
  } catch {
    return false;
  }
}

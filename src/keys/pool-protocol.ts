import type { KeyObject } from "node:crypto";
import type { OpenedKey, Pkcs11KeySpec, SessionReport } from "./pkcs11/token.js";

/** What the main thread asks a signing worker (pool.ts → pool-worker.ts). */
export type PoolRequest =
  | { op: "file-open"; key: number; privateKey: KeyObject }
  | { op: "file-sign"; key: number; input: Uint8Array }
  | { op: "file-close"; key: number }
  | { op: "pkcs11-open"; key: number; module: string; lock: SharedArrayBuffer; spec: Pkcs11KeySpec }
  | { op: "pkcs11-sign"; key: number; input: Uint8Array }
  | { op: "pkcs11-close"; key: number; finalize: boolean }
  | { op: "pkcs11-sessions" };

/** What each request answers. */
export interface PoolResults {
  "file-open": null;
  "file-sign": Uint8Array;
  "file-close": null;
  "pkcs11-open": OpenedKey;
  "pkcs11-sign": Uint8Array;
  "pkcs11-close": null;
  "pkcs11-sessions": SessionReport[];
}

export type PoolMessage = PoolRequest & { id: number };

export type PoolReply = { id: number; result: unknown } | { id: number; error: string };

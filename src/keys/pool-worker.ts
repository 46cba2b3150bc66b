/**
 * One signing worker thread of the pool (pool.ts starts them): RSA with file keys, and every
 * PKCS#11 call, each thread with its own session per PKCS#11 key. Messages are handled one at
 * a time, synchronously: the thread is busy for exactly one signature, which is what the pool
 * schedules on.
 */
import type { KeyObject } from "node:crypto";
import { parentPort } from "node:worker_threads";
import { ModuleLock } from "./pkcs11/module-lock.js";
import { ModuleSessions, Pkcs11Failure } from "./pkcs11/token.js";
import type { PoolMessage, PoolReply } from "./pool-protocol.js";
import { rsaPkcs1Sign } from "./rsa.js";

const fileKeys = new Map<number, KeyObject>();
const modules = new Map<string, ModuleSessions>();
const pkcs11Keys = new Map<number, ModuleSessions>();

function moduleOf(key: number): ModuleSessions {
  const m = pkcs11Keys.get(key);
  if (!m) throw new Pkcs11Failure(`no key ${key} is open`);
  return m;
}

function handle(m: PoolMessage): unknown {
  switch (m.op) {
    case "file-open":
      fileKeys.set(m.key, m.privateKey);
      return null;
    case "file-sign": {
      const key = fileKeys.get(m.key);
      if (!key) throw new Error(`no file key ${m.key} in this worker`);
      return rsaPkcs1Sign(key, Buffer.from(m.input));
    }
    case "file-close":
      fileKeys.delete(m.key);
      return null;
    case "pkcs11-open": {
      let sessions = modules.get(m.module);
      if (!sessions) {
        sessions = new ModuleSessions(m.module, new ModuleLock(m.lock));
        modules.set(m.module, sessions);
      }
      pkcs11Keys.set(m.key, sessions);
      return sessions.open(m.key, m.spec);
    }
    case "pkcs11-sign":
      return moduleOf(m.key).sign(m.key, Buffer.from(m.input));
    case "pkcs11-close": {
      const sessions = moduleOf(m.key);
      pkcs11Keys.delete(m.key);
      sessions.close(m.key);
      if (m.finalize) sessions.finalize();
      return null;
    }
    case "pkcs11-sessions":
      return [...new Set(pkcs11Keys.values())].flatMap((s) => s.sessions());
  }
}

const port = parentPort;
if (port) {
  port.on("message", (m: PoolMessage) => {
    try {
      port.postMessage({ id: m.id, result: handle(m) } satisfies PoolReply);
    } catch (err) {
      const reason = err instanceof Pkcs11Failure ? err.message : `unexpected: ${(err as Error).message}`;
      port.postMessage({ id: m.id, error: reason } satisfies PoolReply);
    }
  });
}

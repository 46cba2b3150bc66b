import assert from "node:assert/strict";
import { test } from "node:test";
import {
  classifyStoreError,
  isOutage,
  StoreCorruptError,
  StoreUnavailableError,
} from "../../src/store/errors.js";

/** Errors as ioredis and opossum raise them, by name, code and message. */
const reply = (message: string, command?: { name: string; args: unknown[] }) =>
  Object.assign(new Error(message), { name: "ReplyError", ...(command ? { command } : {}) });
const coded = (code: string, message: string) => Object.assign(new Error(message), { code });

test("Redis refusing to serve, unreachable, slow, or the breaker open: outages", () => {
  for (const message of [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "BUSY Redis is busy running a script.",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
    "NOAUTH Authentication required.",
    "WRONGPASS invalid username-password pair or user is disabled.",
    "NOPERM this user has no permissions to run the 'set' command",
    "ERR Error running script (call to f_x): @user_script:3: OOM command not allowed",
  ])
    assert.equal(isOutage(reply(message)), true, message);
  for (const err of [
    coded("EOPENBREAKER", "Breaker is open"),
    coded("ETIMEDOUT", "Timed out after 1000ms"),
    coded("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:6379"),
    new Error("Connection is closed."),
    new Error("Stream isn't writeable and enableOfflineQueue options is false"),
    new Error("Command timed out"),
    Object.assign(new Error("Reached the max retries per request limit (which is 1)."), {
      name: "MaxRetriesPerRequestError",
    }),
  ])
    assert.equal(isOutage(err), true, err.message);
});

test("Redis answering about data we did not write: corrupt, with the key; our own bugs stay themselves", () => {
  const wrongType = reply("WRONGTYPE Operation against a key holding the wrong kind of value", {
    name: "evalsha",
    args: ["abc", 2, "signing:token:{x}", "signing:revoked:{x}", "arg"],
  });
  assert.equal(isOutage(wrongType), false);
  const sorted = classifyStoreError("token_check", wrongType);
  assert.ok(sorted instanceof StoreCorruptError);
  assert.equal(sorted.key, "signing:token:{x} signing:revoked:{x}");
  assert.ok(classifyStoreError("x", coded("ECONNRESET", "read ECONNRESET")) instanceof StoreUnavailableError);
  const bug = new TypeError("cannot read properties of undefined");
  assert.equal(classifyStoreError("x", bug), bug);
  assert.equal(
    classifyStoreError("x", new SyntaxError("Unexpected token")) instanceof StoreUnavailableError,
    false,
  );
});

import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { AdminError } from "../../src/admin/target.js";
import { ClientError, exitCodeOf } from "../../src/client/errors.js";
import { TransportError } from "../../src/client/http.js";
import { ConfigError } from "../../src/config/load.js";
import { hasCode, SigningClusterError } from "../../src/errors.js";
import { ApiError } from "../../src/http/errors.js";
import { StoreCorruptError, StoreUnavailableError } from "../../src/store/errors.js";

/** One error model (issue 30 item 4): one base class, a code from one union. */
const root = new URL("../../../", import.meta.url).pathname;

function sources(dir: string): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const path = join(dir, name);
    return statSync(join(root, path)).isDirectory() ? sources(path) : path.endsWith(".ts") ? [path] : [];
  });
}

test("no error class extends Error but the one base", () => {
  const offenders = ["src", "monitor", "scripts"]
    .flatMap(sources)
    .filter(
      (f) => f !== "src/errors.ts" && /class \w+ extends Error\b/.test(readFileSync(join(root, f), "utf8")),
    );
  assert.deepEqual(offenders, []);
});

test("every error carries its code, and callers decide by it", () => {
  const errors = [
    new ApiError("RATE_LIMITED", "slow down", 1),
    new ClientError("GAVE_UP", "deadline"),
    new TransportError("ECONNREFUSED", "refused"),
    new ConfigError(["x: wrong"]),
    new AdminError("no"),
    new StoreUnavailableError("token_check", new Error("Connection is closed.")),
    new StoreCorruptError("signing:epoch", "no id"),
  ];
  for (const e of errors) assert.ok(e instanceof SigningClusterError, e.name);
  assert.deepEqual(
    errors.map((e) => [e.name, e.code]),
    [
      ["ApiError", "RATE_LIMITED"],
      ["ClientError", "GAVE_UP"],
      ["TransportError", "TRANSPORT"],
      ["ConfigError", "CONFIG_INVALID"],
      ["AdminError", "ADMIN_FAILED"],
      ["StoreUnavailableError", "STORE_UNAVAILABLE"],
      ["StoreCorruptError", "STORE_CORRUPT"],
    ],
  );
  assert.equal(hasCode(new AdminError("bad", "USAGE"), "USAGE"), true);
  assert.equal(exitCodeOf(new ClientError("CONFIG", "x")), 2);
  assert.equal(exitCodeOf(new ClientError("REFUSED", "x")), 1);
});

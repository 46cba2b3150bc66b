import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parse } from "yaml";
import { buildConfig, ConfigError, loadConfigFile } from "../../src/config/load.js";
import { configSchema } from "../../src/config/schema.js";

const dir = mkdtempSync(join(tmpdir(), "signing-config-"));
after(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, "secret"), "s".repeat(40), { mode: 0o600 });
writeFileSync(join(dir, "short"), "tooshort", { mode: 0o600 });
writeFileSync(join(dir, "key.asc"), "not really a key, but a file", { mode: 0o600 });
writeFileSync(join(dir, "open-key.asc"), "a key anyone on the host can read", { mode: 0o644 });

const valid = {
  node: { allowPlaintext: true },
  redis: { url: "redis://127.0.0.1:6379" },
  token: {
    secrets: [{ kid: "k1", file: "secret" }],
    issuers: ["127.0.0.0/8"],
    credentials: [{ user: "bm", passwordHash: `scrypt$16384$8$1$${"A".repeat(22)}==$${"A".repeat(43)}=` }],
  },
  signing: { formats: { gpg: { keyFile: "key.asc" } } },
};

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems;
  }
  assert.fail("expected a ConfigError");
}

describe("configuration", () => {
  test("a minimal config gets its defaults and absolute paths", () => {
    const { config, tokenSecrets } = buildConfig(valid, dir, {});
    assert.equal(config.node.port, 9110);
    assert.equal(config.store.downPolicy, "hmac");
    assert.equal(config.signing.formats.gpg?.keyFile, join(dir, "key.asc"));
    assert.equal(config.signing.formats.gpg?.maxSize, 512 * 1024 * 1024);
    assert.equal(tokenSecrets[0]?.secret.toString(), "s".repeat(40));
  });

  test("Redis Cluster is refused, pointing at Sentinel", () => {
    const found = problems(() =>
      buildConfig({ ...valid, redis: { cluster: [{ host: "r1", port: 7000 }] } }, dir, {}),
    );
    assert.equal(found.length, 1, found.join("\n"));
    assert.match(found[0] as string, /^redis\.cluster: Redis Cluster is not supported.*Sentinel/);
  });

  test("every problem is listed at once", () => {
    const found = problems(() =>
      buildConfig(
        {
          node: { port: 70000 },
          redis: {},
          store: { breaker: { resetTimeoutMs: 60_000 } },
          token: {
            secrets: [],
            issuers: ["not-a-cidr"],
            credentials: [{ user: "x", passwordHash: "plain" }],
          },
          signing: { formats: {} },
          extra: 1,
        },
        dir,
        {},
      ),
    );
    for (const path of [
      "node.port",
      "redis",
      "store.breaker.resetTimeoutMs",
      "token.secrets",
      "token.issuers.0",
      "token.credentials.0.passwordHash",
      "signing.formats",
    ]) {
      assert.ok(
        found.some((p) => p.startsWith(path)),
        `${path} in ${found.join("; ")}`,
      );
    }
    assert.ok(
      found.some((p) => p.includes("extra")),
      found.join("; "),
    );
  });

  test("a password hash scrypt cannot use stops the start, naming each problem", () => {
    const salt = Buffer.alloc(16, 7).toString("base64");
    const withHashes = (...hashes: string[]) => ({
      ...valid,
      token: { ...valid.token, credentials: hashes.map((passwordHash) => ({ user: "bm", passwordHash })) },
    });
    const found = problems(() =>
      buildConfig(
        withHashes(
          `scrypt$3$8$1$${salt}$c2VjcmV0`,
          `scrypt$16384$0$1$$${salt}`,
          `scrypt$1048576$8$1$${salt}$c2VjcmV0`,
        ),
        dir,
        {},
      ),
    );
    const format = "not a usable scrypt hash (scrypt$N$r$p$<salt base64>$<hash base64>)";
    assert.deepEqual(found, [
      `token.credentials.0.passwordHash: ${format}: N must be a power of two ≥ 2, not 3`,
      `token.credentials.1.passwordHash: ${format}: r must be a positive integer; salt is empty`,
      `token.credentials.2.passwordHash: ${format}: N=1048576, r=8, p=1 need 1025 MiB (128·r·(N+p+2) bytes), above scrypt's 256 MiB here`,
    ]);
    assert.ok(!found.join("\n").includes(salt), "the salt is not echoed");
  });

  test("unreadable, short and missing secrets and keys are reported, never their contents", () => {
    const found = problems(() =>
      buildConfig(
        {
          ...valid,
          token: {
            ...valid.token,
            secrets: [
              { kid: "k1", file: "short" },
              { kid: "k2", env: "NOPE" },
              { kid: "k1", file: "missing" },
            ],
          },
          signing: { formats: { gpg: { keyFile: "nokey.asc", passphrase: { file: "nopass" } } } },
        },
        dir,
        {},
      ),
    );
    assert.equal(found.length, 6, found.join("\n"));
    assert.ok(!found.join("\n").includes("tooshort"));
  });

  test("a private key or secret that other users can read is refused", () => {
    const found = problems(() =>
      buildConfig({ ...valid, signing: { formats: { gpg: { keyFile: "open-key.asc" } } } }, dir, {}),
    );
    assert.deepEqual(found, [
      `signing.formats.gpg.keyFile: ${join(dir, "open-key.asc")} is accessible to other users (mode 644): chmod 600 it`,
    ]);
  });

  test("authenticode: a key and certificate, or a PKCS#12 file; its private key or PKCS#12 file readable by others is refused", () => {
    const authenticode = (f: Record<string, unknown>) => () =>
      buildConfig({ ...valid, signing: { formats: { authenticode: f } } }, dir, {});
    const both = problems(authenticode({ certFile: "key.asc", keyFile: "key.asc", pkcs12File: "key.asc" }));
    assert.match(both.join("\n"), /give certFile and keyFile, or pkcs12File/);
    assert.match(
      problems(authenticode({ certFile: "key.asc" })).join("\n"),
      /give certFile and keyFile, or pkcs12File/,
    );
    assert.deepEqual(problems(authenticode({ certFile: "key.asc", keyFile: "open-key.asc" })), [
      `signing.formats.authenticode.keyFile: ${join(dir, "open-key.asc")} is accessible to other users (mode 644): chmod 600 it`,
    ]);
    assert.deepEqual(problems(authenticode({ pkcs12File: "open-key.asc" })), [
      `signing.formats.authenticode.pkcs12File: ${join(dir, "open-key.asc")} is accessible to other users (mode 644): chmod 600 it`,
    ]);
    const ok = buildConfig(
      {
        ...valid,
        signing: { formats: { authenticode: { pkcs12File: "key.asc", passphrase: { file: "secret" } } } },
      },
      dir,
      {},
    );
    assert.equal(ok.authenticodePassphrase, "s".repeat(40));
    assert.equal(ok.config.signing.formats.authenticode?.pkcs12File, join(dir, "key.asc"));
  });

  test("authenticode with pkcs11: the certificate chain required, engine and module must exist, the PIN read from its private file; one line naming the key for each refusal", () => {
    writeFileSync(join(dir, "pin"), "1234\n", { mode: 0o600 });
    writeFileSync(join(dir, "engine.so"), "stands in for the engine: only its presence is checked here");
    const pkcs11 = { module: "engine.so", tokenLabel: "t", keyLabel: "k", pin: { file: "pin" } };
    const authenticode = (f: Record<string, unknown>) => () =>
      buildConfig({ ...valid, signing: { formats: { authenticode: f } } }, dir, {});
    const ok = authenticode({ certFile: "key.asc", pkcs11: { ...pkcs11, engine: "engine.so" } })();
    assert.equal(ok.pkcs11Pins.authenticode, "1234");
    assert.equal(ok.config.signing.formats.authenticode?.pkcs11?.engine, join(dir, "engine.so"));
    assert.deepEqual(problems(authenticode({ pkcs11: { ...pkcs11, engine: "engine.so" } })), [
      "signing.formats.authenticode.certFile: with pkcs11, give certFile: the PEM certificate chain of the token's key",
    ]);
    assert.deepEqual(
      problems(authenticode({ certFile: "key.asc", pkcs11: { ...pkcs11, engine: "none.so" } })),
      [
        `signing.formats.authenticode.pkcs11.engine: ${join(dir, "none.so")} does not exist (install libengine-pkcs11-openssl, or set its path)`,
      ],
    );
    const noModule = { ...pkcs11, module: "/nowhere/libp11.so", engine: "engine.so" };
    assert.deepEqual(problems(authenticode({ certFile: "key.asc", pkcs11: noModule })), [
      "signing.formats.authenticode.pkcs11.module: /nowhere/libp11.so does not exist",
    ]);
    const withPassphrase = {
      certFile: "key.asc",
      passphrase: { file: "pin" },
      pkcs11: { ...pkcs11, engine: "engine.so" },
    };
    assert.deepEqual(problems(authenticode(withPassphrase)), [
      "signing.formats.authenticode.passphrase: is for keyFile or pkcs12File: the token's PIN goes in pkcs11.pin",
    ]);
    const withKey = { certFile: "key.asc", keyFile: "key.asc", pkcs11: { ...pkcs11, engine: "engine.so" } };
    assert.match(
      problems(authenticode(withKey)).join("\n"),
      /give certFile and keyFile, or pkcs12File, or pkcs11/,
    );
    // The default engine is where Debian's libengine-pkcs11-openssl puts it.
    const defaulted = configSchema.parse({
      ...valid,
      signing: { formats: { authenticode: { certFile: "c.pem", pkcs11 } } },
    });
    assert.equal(
      defaulted.signing.formats.authenticode?.pkcs11?.engine,
      "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
    );
  });

  test("a pkcs11 key: one backend per format, a key label or id, the PIN read from its private file or env", () => {
    writeFileSync(join(dir, "pin"), "1234\n", { mode: 0o600 });
    writeFileSync(join(dir, "open-pin"), "1234\n", { mode: 0o640 });
    const pkcs11 = {
      module: "/usr/lib/softhsm/libsofthsm2.so",
      tokenLabel: "t",
      keyLabel: "k",
      pin: { file: "pin" },
    };
    const gpg = { pkcs11: { ...pkcs11, userId: "R <r@example.com>", createdAt: "2026-01-01T00:00:00Z" } };
    const loaded = buildConfig({ ...valid, signing: { formats: { gpg } } }, dir, {});
    assert.equal(loaded.pkcs11Pins.gpg, "1234");
    assert.equal(loaded.config.signing.formats.gpg?.pkcs11?.pin.file, join(dir, "pin"));
    assert.equal(loaded.config.signing.formats.gpg?.pkcs11?.timeoutMs, 10_000);
    const fromEnv = { ...gpg, pkcs11: { ...gpg.pkcs11, pin: { env: "TOKEN_PIN" } } };
    assert.equal(
      buildConfig({ ...valid, signing: { formats: { gpg: fromEnv } } }, dir, { TOKEN_PIN: "5678" }).pkcs11Pins
        .gpg,
      "5678",
    );
    const refused = (formats: unknown, env: NodeJS.ProcessEnv = {}) =>
      problems(() => buildConfig({ ...valid, signing: { formats } }, dir, env)).join("\n");
    assert.match(
      refused({ gpg: { ...gpg, keyFile: "key.asc" } }),
      /signing.formats.gpg: give exactly one of keyFile or pkcs11/,
    );
    assert.match(refused({ gpg: {} }), /signing.formats.gpg: give exactly one of keyFile or pkcs11/);
    const { keyLabel: _, ...unnamed } = gpg.pkcs11;
    assert.match(refused({ gpg: { pkcs11: unnamed } }), /signing.formats.gpg.pkcs11: give keyLabel or keyId/);
    assert.match(refused({ gpg: { pkcs11: { ...gpg.pkcs11, keyId: "xyz" } } }), /keyId: must be hex/);
    assert.match(refused({ gpg: { pkcs11: { ...gpg.pkcs11, createdAt: "yesterday" } } }), /createdAt/);
    assert.match(
      refused({ sshsig: { pkcs11: { ...pkcs11, pin: { file: "open-pin" } } } }),
      /signing.formats.sshsig.pkcs11.pin: .*open-pin is accessible to other users \(mode 640\)/,
    );
    assert.match(
      refused({ gpg: fromEnv }),
      /signing.formats.gpg.pkcs11.pin: environment variable TOKEN_PIN is not set/,
    );
  });

  test("group-readable secrets are refused too; the audit log must be appendable", () => {
    writeFileSync(join(dir, "group-secret"), "g".repeat(40), { mode: 0o640 });
    const found = problems(() =>
      buildConfig(
        {
          ...valid,
          token: { ...valid.token, secrets: [{ kid: "k1", file: "group-secret" }] },
          audit: { file: "no-such-dir/audit.log" },
        },
        dir,
        {},
      ),
    );
    assert.deepEqual(found.sort(), [
      `audit.file: cannot append to ${join(dir, "no-such-dir/audit.log")}: ENOENT`,
      `token.secrets.0: ${join(dir, "group-secret")} is accessible to other users (mode 640): chmod 600 it`,
    ]);
  });

  test("plain HTTP only when asked for; TLS files must be readable", () => {
    const { node: _plain, ...noNode } = valid;
    assert.match(
      problems(() => buildConfig(noNode, dir, {})).join("\n"),
      /tls: give tls.cert and tls.key, or set node.allowPlaintext/,
    );
    const tls = problems(() =>
      buildConfig({ ...noNode, tls: { cert: "nope.pem", key: "key.asc" } }, dir, {}),
    );
    assert.deepEqual(tls, [`tls.cert: cannot read ${join(dir, "nope.pem")}: ENOENT`]);
  });

  test("environment variables override single keys, JSON-typed", () => {
    const { config } = buildConfig(valid, dir, {
      SIGNING__node__port: "9999",
      SIGNING__store__downPolicy: "reject",
      SIGNING__redis__url: "redis://10.0.0.1:6380",
    });
    assert.equal(config.node.port, 9999);
    assert.equal(config.store.downPolicy, "reject");
    assert.equal(config.redis.url, "redis://10.0.0.1:6380");
    assert.deepEqual(
      problems(() => buildConfig(valid, dir, { SIGNING__store__downPolicy: "maybe" })).length,
      1,
    );
  });

  test("a secret may come from the environment", () => {
    const cfg = { ...valid, token: { ...valid.token, secrets: [{ kid: "k1", env: "TOKEN_SECRET" }] } };
    const { tokenSecrets } = buildConfig(cfg, dir, { TOKEN_SECRET: "e".repeat(32) });
    assert.equal(tokenSecrets[0]?.secret.toString(), "e".repeat(32));
  });

  test("unreadable or invalid files are ConfigErrors", () => {
    assert.equal(problems(() => loadConfigFile(join(dir, "absent.yaml"), {})).length, 1);
    writeFileSync(join(dir, "bad.yaml"), "node: [unclosed");
    assert.match(problems(() => loadConfigFile(join(dir, "bad.yaml"), {}))[0] ?? "", /not valid YAML/);
  });

  test("whole-file results: the internal secret is read like the others, the spool directory must be private", () => {
    const { config, internalSecret } = buildConfig(
      {
        ...valid,
        node: { ...valid.node, internalSecret: { file: "secret" }, advertiseUrl: "https://n1.internal:9110" },
      },
      dir,
      {},
    );
    assert.equal(internalSecret?.toString(), "s".repeat(40));
    assert.equal(config.node.internalSecret?.file, join(dir, "secret"));
    assert.equal(config.signing.spool.maxBytes, 8 * 1024 * 1024 * 1024);
    assert.equal(config.signing.spool.directory, undefined);

    mkdirSync(join(dir, "open-spool"), { mode: 0o755 });
    chmodSync(join(dir, "open-spool"), 0o755);
    const found = problems(() =>
      buildConfig(
        {
          ...valid,
          node: { ...valid.node, internalSecret: { file: "short" } },
          signing: { ...valid.signing, spool: { directory: "open-spool" } },
        },
        dir,
        {},
      ),
    );
    assert.deepEqual(found.sort(), [
      "node.internalSecret: secret must be at least 32 bytes",
      `signing.spool.directory: ${join(dir, "open-spool")} is accessible to other users (mode 755): chmod 700 it`,
    ]);
    const open = problems(() =>
      buildConfig({ ...valid, node: { ...valid.node, internalSecret: { file: "open-key.asc" } } }, dir, {}),
    );
    assert.match(open.join("\n"), /node.internalSecret: .* is accessible to other users/);
    const notUrl = problems(() =>
      buildConfig({ ...valid, node: { ...valid.node, advertiseUrl: "ftp://x" } }, dir, {}),
    );
    assert.match(notUrl.join("\n"), /node.advertiseUrl/);
  });

  test("the shipped examples match the schema", () => {
    for (const file of ["production.example.yaml", "local.example.yaml"]) {
      const raw = parse(readFileSync(new URL(`../../../config/${file}`, import.meta.url), "utf8"));
      const r = configSchema.safeParse(raw);
      assert.ok(r.success, `${file}: ${JSON.stringify(r.error?.issues)}`);
    }
  });
});

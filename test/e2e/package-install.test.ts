/**
 * The package as an operator gets it (docs/operations.md, "Deploying with systemd"): `npm pack`
 * on the built tree, `npm install -g --prefix` of the tarball into a clean directory, and the
 * programs run from that prefix's bin, away from the checkout. Then the shipped systemd units,
 * pointed at that prefix, pass `systemd-analyze verify`.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { prepareDevState } from "../../scripts/dev-state.js";
import { NodeProcess } from "../../scripts/node-process.js";
import { freePort, TestRedis } from "../helpers/redis.js";
import { gpgVerify, sshVerify } from "../helpers/verify.js";

const root = new URL("../../../", import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  name: string;
  version: string;
  bin: Record<string, string>;
};
const UNITS = ["signing-node.service", "signing-monitor.service"];

let work: string;
let prefix: string;
let packed: string[];
/** The programs' environment: the prefix's bin first, then only the directory of this node. */
let env: NodeJS.ProcessEnv;

function npm(args: string[], cwd: string): string {
  return execFileSync("npm", args, {
    cwd,
    encoding: "utf8",
    timeout: 180_000,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Runs an installed program by name, from the prefix's bin, in a directory outside the checkout. */
function run(program: string, args: string[]): string {
  return execFileSync(program, args, {
    cwd: work,
    env,
    encoding: "utf8",
    timeout: 30_000,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

before(() => {
  work = mkdtempSync(join(tmpdir(), "signing-package-"));
  // --ignore-scripts: prepack would rebuild dist/ under the other tests running from it; the
  // tree is already built (npm test builds first).
  const [report] = JSON.parse(
    npm(["pack", "--ignore-scripts", "--json", "--pack-destination", work], root),
  ) as {
    filename: string;
    files: { path: string }[];
  }[];
  assert.ok(report, "npm pack reported its tarball");
  packed = report.files.map((f) => f.path);
  prefix = join(work, "prefix");
  npm(
    [
      "install",
      "-g",
      "--prefix",
      prefix,
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      join(work, report.filename),
    ],
    work,
  );
  env = {
    ...process.env,
    PATH: `${join(prefix, "bin")}:${dirname(process.execPath)}`,
    SIGNING_CONFIG: "",
    SIGNING_MONITOR_CONFIG: "",
    SIGNING_ADMIN_CLUSTER: "",
  };
});
after(() => rmSync(work, { recursive: true, force: true }));

test("the tarball holds the programs, the units, examples, rules, dashboards and docs; no tests, benchmarks or sources", () => {
  const needed = [
    ...Object.values(pkg.bin).map((entry) => entry.replace(/^\.\//, "")),
    "dist/build-info.json",
    ...UNITS.map((u) => `deploy/systemd/${u}`),
    "config/production.example.yaml",
    "prometheus/alerts.yml",
    "prometheus/prometheus.yml",
    "prometheus/alertmanager.yml",
    "grafana/dashboards/signing-cluster.json",
    "runbooks/README.md",
    // The units' Documentation= names it in the installed package.
    "docs/operations.md",
  ];
  for (const file of needed) assert.ok(packed.includes(file), `${file} is in the tarball`);
  const unwanted = packed.filter((f) =>
    /^(test|bench|scripts|src|monitor|\.ci)\/|^dist\/(test|bench|scripts)\/|\.ts$|\.map$|\.test\.yml$/.test(
      f,
    ),
  );
  assert.deepEqual(unwanted, []);
});

test("every program runs from the prefix's bin and prints package.json's version", () => {
  for (const program of Object.keys(pkg.bin)) {
    const installed = realpathSync(join(prefix, "bin", program));
    assert.ok(
      installed.startsWith(join(realpathSync(prefix), "lib", "node_modules", pkg.name, "")),
      installed,
    );
    assert.equal(run(program, ["--version"]), `${pkg.version}\n`, program);
  }
});

test("each program's --help names its commands and options", () => {
  const help: Record<string, string[]> = {
    "signing-node": ["--config FILE", "hash-password", "--version"],
    "signing-monitor": ["--config FILE", "--version"],
    "signing-admin": [
      "status",
      "tokens",
      "epoch",
      "reseed",
      "invalidate",
      "snapshot",
      "hash-password",
      "--cluster",
    ],
    signtool: ["token", "sign", "--version"],
  };
  assert.deepEqual(Object.keys(help).sort(), Object.keys(pkg.bin).sort());
  for (const [program, words] of Object.entries(help)) {
    const out = run(program, ["--help"]);
    for (const word of words)
      assert.match(out, new RegExp(`(^|\\s)${word}\\b`), `${program} --help: ${word}`);
  }
});

test("the installed node serves, names the build's commit, and the installed signtool signs through it", async () => {
  const redis = await TestRedis.start();
  const state = await prepareDevState(join(work, "state"), redis.url);
  const node = new NodeProcess({
    configFile: state.configFile,
    port: await freePort(),
    id: "installed",
    executable: join(prefix, "bin", "signing-node"),
  });
  try {
    await node.ready();
    const stamp = JSON.parse(readFileSync(join(root, "dist", "build-info.json"), "utf8")) as Record<
      string,
      string
    >;
    assert.deepEqual(await (await fetch(`${node.url}/__version__`)).json(), {
      version: pkg.version,
      commit: process.env.SIGNING_COMMIT ?? stamp.commit,
      builtAt: stamp.builtAt,
      node: "installed",
    });

    const host = node.url.replace(/^http:\/\//, "");
    const issuer = ["--user", state.issuer.user, "--password-file", state.issuer.passwordFile];
    run("signtool", [
      "token",
      "-H",
      host,
      ...issuer,
      "--slave-ip",
      "127.0.0.1",
      "--duration",
      "1h",
      "-o",
      "token",
    ]);
    const data = Buffer.from(`signed by an installed package ${Date.now()}\n`);
    writeFileSync(join(work, "hello.txt"), data);
    run("signtool", [
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      "-H",
      host,
      "-f",
      "gpg",
      "-f",
      "sshsig",
      "hello.txt",
    ]);
    const gpg = gpgVerify(
      readFileSync(state.keys.gpg.publicKeyFile, "utf8"),
      data,
      readFileSync(join(work, "hello.txt.asc")),
    );
    assert.ok(gpg.ok, gpg.output);
    const ssh = sshVerify(
      readFileSync(state.keys.sshsig.publicKeyFile, "utf8"),
      "file",
      data,
      readFileSync(join(work, "hello.txt.sig")),
    );
    assert.ok(ssh.ok, ssh.output);
  } finally {
    await node.stop();
    await redis.stop();
  }
});

/**
 * verify checks that ExecStart's program exists and is executable, so the copies run the
 * programs just installed in the prefix (the units name /usr/bin, where `npm install -g
 * --prefix /usr` puts them); nothing else is changed. User=signing needs no such account here:
 * systemd resolves users when it starts a unit, not when it loads one, so verify does not
 * look the user up.
 */
test("the systemd units, run from the installed prefix, pass systemd-analyze verify without a warning", () => {
  const units = join(work, "units");
  mkdirSync(units);
  for (const unit of UNITS) {
    const text = readFileSync(join(root, "deploy", "systemd", unit), "utf8");
    const execStart = /^ExecStart=\/usr\/bin\/(\S+) /m.exec(text);
    assert.ok(
      execStart?.[1] && execStart[1] in pkg.bin,
      `${unit} runs one of the package's programs from /usr/bin`,
    );
    writeFileSync(
      join(units, unit),
      text.replace(/^ExecStart=\/usr\/bin\//m, `ExecStart=${join(prefix, "bin")}/`),
    );
  }
  const verify = spawnSync("systemd-analyze", ["verify", ...UNITS.map((u) => join(units, u))], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(verify.error, undefined, "systemd-analyze runs (apt-get install systemd)");
  // Unknown keys and bad values are warnings on stderr with exit status 0: both must be clean.
  assert.equal(`${verify.stdout}${verify.stderr}`, "");
  assert.equal(verify.status, 0);
});

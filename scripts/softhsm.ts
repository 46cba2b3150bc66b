/**
 * SoftHSM2 tokens of their own, for tests and for `SIGNING_KEYS=softhsm npm start`: each in its
 * own directory with its own softhsm2.conf (SOFTHSM2_CONF), never the machine's shared token
 * directory. Keys are generated inside the token by `pkcs11-tool` (opensc), sensitive and
 * non-extractable, so their private halves never exist outside it.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const MODULE_CANDIDATES = [
  "/usr/lib/softhsm/libsofthsm2.so",
  "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/** The SoftHSM2 module of this machine, or undefined when softhsm2 is not installed. */
export function softHsmModule(): string | undefined {
  return MODULE_CANDIDATES.find((m) => existsSync(m));
}

/** A key type as `pkcs11-tool --key-type` spells it. */
export type SoftHsmKeyType = "EC:edwards25519" | "EC:prime256v1" | "rsa:2048" | "rsa:3072";

export interface SoftHsmKey {
  label: string;
  /** CKA_ID, hex. */
  id: string;
  type: SoftHsmKeyType;
}

export interface SoftHsmTokenOptions {
  label?: string;
  pin?: string;
  keys: SoftHsmKey[];
}

function run(program: string, args: string[], env: NodeJS.ProcessEnv, what: string): void {
  const r = spawnSync(program, args, { env, encoding: "utf8" });
  if (r.error) throw new Error(`${what}: cannot run ${program} (${r.error.message}): is it installed?`);
  if (r.status !== 0) throw new Error(`${what}: ${program} failed: ${(r.stderr || r.stdout).trim()}`);
}

/** One SoftHSM2 token in `dir`, with its keys; `conf` is the SOFTHSM2_CONF that finds it. */
export class SoftHsmToken {
  readonly tokenDir: string;
  readonly conf: string;
  readonly pinFile: string;

  private constructor(
    readonly dir: string,
    readonly module: string,
    readonly label: string,
    readonly pin: string,
  ) {
    this.tokenDir = join(dir, "tokens");
    this.conf = join(dir, "softhsm2.conf");
    this.pinFile = join(dir, "pin");
  }

  /** Creates the token and generates its keys; throws (after cleaning up) when a tool fails. */
  static create(dir: string, o: SoftHsmTokenOptions): SoftHsmToken {
    const module = softHsmModule();
    if (!module) throw new Error("SoftHSM2 is not installed (apt-get install softhsm2 opensc)");
    const token = new SoftHsmToken(dir, module, o.label ?? "signing", o.pin ?? "1234");
    try {
      token.init(o.keys);
    } catch (err) {
      token.destroy();
      throw err;
    }
    return token;
  }

  /** The token already made in `dir` (by an earlier run), or a new one. */
  static openOrCreate(dir: string, o: SoftHsmTokenOptions & { label: string; pin: string }): SoftHsmToken {
    const module = softHsmModule();
    if (!module) throw new Error("SoftHSM2 is not installed (apt-get install softhsm2 opensc)");
    const existing = new SoftHsmToken(dir, module, o.label, o.pin);
    return existsSync(existing.conf) ? existing : SoftHsmToken.create(dir, o);
  }

  /** The environment the SoftHSM2 tools, and a node using this token, need. */
  env(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
    return { ...base, SOFTHSM2_CONF: this.conf };
  }

  private init(keys: SoftHsmKey[]): void {
    mkdirSync(this.tokenDir, { recursive: true, mode: 0o700 });
    writeFileSync(
      this.conf,
      `directories.tokendir = ${this.tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
    );
    writeFileSync(this.pinFile, `${this.pin}\n`, { mode: 0o600 });
    const env = this.env();
    const so = `so-${this.pin}`;
    run(
      "softhsm2-util",
      ["--init-token", "--free", "--label", this.label, "--pin", this.pin, "--so-pin", so],
      env,
      `token ${this.label}`,
    );
    for (const k of keys) {
      const args = ["--module", this.module, "--token-label", this.label, "--login", "--pin", this.pin];
      const gen = ["--keypairgen", "--key-type", k.type, "--label", k.label, "--id", k.id, "--usage-sign"];
      run("pkcs11-tool", [...args, ...gen], env, `key ${k.label}`);
    }
  }

  /** Takes the token away as a pulled HSM would be: its directory is moved aside. */
  remove(): void {
    renameSync(this.tokenDir, `${this.tokenDir}.away`);
  }

  /** Puts a removed token back. */
  restore(): void {
    renameSync(`${this.tokenDir}.away`, this.tokenDir);
  }

  destroy(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

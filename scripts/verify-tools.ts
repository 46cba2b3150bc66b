/**
 * Signatures checked by the real tools (gpg and gpgv, ssh-keygen, minisign), each trusting only the
 * key it is given: the tests and the benchmarks use them on every kind of output.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface VerifyResult {
  ok: boolean;
  output: string;
}

function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "signing-verify-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `gpg --verify` with the real gpg, in a throw-away keyring that holds only `publicKey`. */
export function gpgVerify(publicKey: string, data: Buffer, signature: Buffer): VerifyResult {
  return withTempDir((dir) => {
    const home = join(dir, "gnupg");
    spawnSync("mkdir", ["-m", "700", home]);
    const imported = spawnSync("gpg", ["--homedir", home, "--batch", "--import"], { input: publicKey });
    if (imported.status !== 0) return { ok: false, output: imported.stderr.toString() };
    writeFileSync(join(dir, "file"), data);
    writeFileSync(join(dir, "file.asc"), signature);
    const r = spawnSync("gpg", [
      "--homedir",
      home,
      "--batch",
      "--status-fd",
      "1",
      "--verify",
      join(dir, "file.asc"),
      join(dir, "file"),
    ]);
    spawnSync("gpgconf", ["--homedir", home, "--kill", "all"]);
    const output = r.stdout.toString() + r.stderr.toString();
    return { ok: r.status === 0 && output.includes("[GNUPG:] GOODSIG"), output };
  });
}

/** `ssh-keygen -Y verify` with the real OpenSSH, trusting only `publicKeyLine`. */
export function sshVerify(
  publicKeyLine: string,
  namespace: string,
  data: Buffer,
  signature: Buffer,
): VerifyResult {
  return withTempDir((dir) => {
    const [type, key] = publicKeyLine.trim().split(/\s+/);
    writeFileSync(join(dir, "allowed_signers"), `signer@test ${type} ${key}\n`);
    writeFileSync(join(dir, "file.sig"), signature);
    const r = spawnSync(
      "ssh-keygen",
      [
        "-Y",
        "verify",
        "-f",
        join(dir, "allowed_signers"),
        "-I",
        "signer@test",
        "-n",
        namespace,
        "-s",
        join(dir, "file.sig"),
      ],
      { input: data },
    );
    return { ok: r.status === 0, output: r.stdout.toString() + r.stderr.toString() };
  });
}

/** `minisign -V` with the real minisign, trusting only `publicKeyFileText` (as `/keys/minisign` serves it). */
export function minisignVerify(publicKeyFileText: string, data: Buffer, signature: Buffer): VerifyResult {
  return withTempDir((dir) => {
    writeFileSync(join(dir, "minisign.pub"), publicKeyFileText);
    writeFileSync(join(dir, "file"), data);
    writeFileSync(join(dir, "file.minisig"), signature);
    const r = spawnSync("minisign", ["-V", "-p", join(dir, "minisign.pub"), "-m", join(dir, "file")], {
      env: { ...process.env, LC_ALL: "C" },
    });
    return { ok: r.status === 0, output: r.stdout.toString() + r.stderr.toString() };
  });
}

/**
 * A cleartext-signed file checked by the real `gpg --verify` and `gpgv`, each trusting only
 * `publicKey`; `text` is what gpg says was signed.
 */
export function clearsignVerify(publicKey: string, signed: Buffer): VerifyResult & { text: string } {
  return withTempDir((dir) => {
    const home = join(dir, "gnupg");
    spawnSync("mkdir", ["-m", "700", home]);
    const gpg = (args: string[], input?: Buffer | string) =>
      spawnSync("gpg", ["--homedir", home, "--batch", ...args], input === undefined ? {} : { input });
    const imported = gpg(["--import"], publicKey);
    if (imported.status !== 0) return { ok: false, output: imported.stderr.toString(), text: "" };
    const file = join(dir, "InRelease");
    writeFileSync(file, signed);
    const keyring = join(dir, "trusted.gpg");
    writeFileSync(keyring, gpg(["--export"]).stdout);
    const g = gpg(["--status-fd", "1", "--verify", file]);
    const v = spawnSync("gpgv", ["--homedir", home, "--keyring", keyring, file]);
    const d = gpg(["--output", "-", "--decrypt", file]);
    spawnSync("gpgconf", ["--homedir", home, "--kill", "all"]);
    const output = `${g.stdout}${g.stderr}\n${v.stdout}${v.stderr}`;
    const ok = g.status === 0 && output.includes("[GNUPG:] GOODSIG") && v.status === 0;
    return { ok, output, text: d.stdout.toString() };
  });
}

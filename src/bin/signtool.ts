#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { CONFIG_ENV } from "../client/config-file.js";
import { Deadline } from "../client/deadline.js";
import { parseDuration } from "../client/duration.js";
import { ClientError, exitCodeOf } from "../client/errors.js";
import { nodeUrl } from "../client/nodes.js";
import { Progress } from "../client/progress.js";
import { checkOutputsWritable, planTasks, runTasks, signSettings } from "../client/sign-run.js";
import { SigningClient } from "../client/signing-client.js";
import { requestToken } from "../client/token.js";
import { writeFileAtomic } from "../files/write-atomic.js";
import { PACKAGE_VERSION } from "../version.js";

/** A mistake on the command line: exit 2, like commander's own usage errors. */
const usage = (message: string) => new ClientError("USAGE", message);

const collect = (value: string, previous: string[]) => [...previous, value];
const durationArg = (v: string) => {
  try {
    return parseDuration(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};
const positiveInt = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive whole number");
  return n;
};

function readSecretFile(file: string, what: string): string {
  try {
    const value = readFileSync(file, "utf8").replace(/\r?\n$/, "");
    if (!value) throw new Error("empty");
    return value;
  } catch (e) {
    throw new ClientError(
      "LOCAL_IO",
      `cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

function nodesFrom(specs: string[], tls: boolean): string[] {
  const nodes = specs.map((h) => h.trim()).filter(Boolean);
  if (nodes.length === 0) throw usage("give at least one node with -H host:port");
  return nodes.map((h) => nodeUrl(h, tls));
}

/** --client-cert and --client-key, both or neither. */
function clientCertFrom(o: { clientCert?: string; clientKey?: string }): {
  clientCert?: { cert: Buffer; key: Buffer };
} {
  if (!o.clientCert && !o.clientKey) return {};
  if (!o.clientCert || !o.clientKey) throw usage("--client-cert and --client-key go together");
  return { clientCert: { cert: readFileSync(o.clientCert), key: readFileSync(o.clientKey) } };
}

/** `USER:PASSWORD_FILE` → issuer credentials. */
function issuerFrom(spec: string): { user: string; password: string } {
  const colon = spec.indexOf(":");
  if (colon < 1) throw usage("--token-from takes USER:PASSWORD_FILE");
  return { user: spec.slice(0, colon), password: readSecretFile(spec.slice(colon + 1), "password file") };
}

/** With --token-from: what a new token is requested with. */
function issuerOf(o: { tokenFrom?: string; slaveIp?: string; tokenFile: string; duration: number }) {
  if (!o.tokenFrom) return undefined;
  const slaveIp = o.slaveIp ?? tokenIp(o.tokenFile);
  if (!slaveIp) throw usage("--token-from needs --slave-ip when there is no readable token");
  return { ...issuerFrom(o.tokenFrom), slaveIp, durationSeconds: o.duration };
}

/** The IP a token is bound to, from its (unencrypted, MAC-protected) claims. */
function tokenIp(tokenFile: string): string | undefined {
  try {
    const payload = readFileSync(tokenFile, "utf8").trim().split(".")[2] ?? "";
    const ip = (JSON.parse(Buffer.from(payload, "base64url").toString()) as { ip?: unknown }).ip;
    return typeof ip === "string" ? ip : undefined;
  } catch {
    return undefined;
  }
}

const program = new Command()
  .name("signtool")
  .description(
    "The build machine's signing client: fetch a token, sign files through any node of the cluster.",
  )
  .version(PACKAGE_VERSION)
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

program
  .command("token")
  .description('"download token": ask the cluster for a token bound to a build machine and store it')
  .requiredOption("-H, --host <host:port>", "a signing node (repeat for each node)", collect, [])
  .requiredOption("--user <user>", "issuer (build master) user")
  .requiredOption("--password-file <file>", "file holding the issuer password")
  .requiredOption("--slave-ip <ip>", "IP address of the build machine that will use the token")
  .option("--duration <time>", "token lifetime: seconds or 15m, 2h, 1d", durationArg, 7200)
  .option("--formats <list>", "restrict the token to these formats (comma-separated)")
  .requiredOption("-o, --output <file>", "where to write the token (mode 0600)")
  .option("-c, --cacert <file>", "CA or pinned server certificate (https)")
  .option("--client-cert <file>", "client certificate (PEM), for nodes that require mutual TLS")
  .option("--client-key <file>", "the client certificate's key (PEM, mode 0600)")
  .option("--max-time <time>", "give up after this long", durationArg, 120)
  .action(async (o) => {
    const ca = o.cacert ? readFileSync(o.cacert) : undefined;
    const token = await requestToken({
      nodes: nodesFrom(o.host, Boolean(ca || o.clientCert)),
      user: o.user,
      password: readSecretFile(o.passwordFile, "password file"),
      slaveIp: o.slaveIp,
      durationSeconds: o.duration,
      maxTimeMs: o.maxTime * 1000,
      ...(o.formats ? { formats: String(o.formats).split(",") } : {}),
      ...(ca ? { ca } : {}),
      ...clientCertFrom(o),
    });
    await writeFileAtomic(o.output, token, 0o600);
    process.stderr.write(`signtool: token for ${o.slaveIp} written to ${o.output}\n`);
  });

program
  .command("sign", { isDefault: true })
  .description('"sign" (the default command): upload files to any node and write their verified signatures')
  .argument("<files...>", "files to sign")
  .requiredOption("-t, --token-file <file>", "token file from the download-token step")
  .requiredOption("-n, --nonce-file <file>", "nonce file (created if missing; empty for a new token)")
  .option("-H, --host <host:port>", "a signing node (repeat for each node)", collect, [])
  .option(
    "-f, --format <format>",
    "signing format: gpg, gpg-clearsign, sshsig, minisign or authenticode (repeatable)",
    collect,
    [],
  )
  .option("-c, --cacert <file>", "CA or pinned server certificate: the nodes speak https")
  .option("--client-cert <file>", "client certificate (PEM), for nodes that require mutual TLS")
  .option("--client-key <file>", "the client certificate's key (PEM, mode 0600)")
  .option("--cachedir <dir>", "keep signatures here by digest; a rerun uploads nothing")
  .option(
    "--trusted-key <format=file>",
    "check this format's signatures with this public key (repeatable)",
    collect,
    [],
  )
  .option("--config <file>", `defaults for hosts, formats and trusted keys (JSON or YAML; or $${CONFIG_ENV})`)
  .addOption(
    new Option("-o, --output <file>", "signature file (one file, one format)").conflicts("outputDir"),
  )
  .option(
    "--output-dir <dir>",
    "write signatures here instead of next to the files (authenticode: the signed file, same name; default beside it as NAME.signed.EXT)",
  )
  .option(
    "--in-place",
    "authenticode: replace each file with its signed copy (renamed into place, never half-written)",
  )
  .option("-j, --jobs <n>", "files signed concurrently", positiveInt, 4)
  .option("--max-time <time>", "the whole run ends by then, signed or not", durationArg, 900)
  .option(
    "--token-from <user:passwordfile>",
    "issuer credentials: fetch a new token when the current one is rejected",
  )
  .option("--slave-ip <ip>", "with --token-from: IP for new tokens (default: the current token's)")
  .option("--duration <time>", "with --token-from: lifetime of new tokens", durationArg, 7200)
  .action(async (files: string[], o) => {
    const settings = signSettings(o);
    const tasks = planTasks(files, settings.formats, o);
    await checkOutputsWritable(tasks);
    const progress = new Progress(process.stderr);
    const client = new SigningClient({
      nodes: settings.nodes,
      tokenFile: o.tokenFile,
      nonceFile: o.nonceFile,
      deadline: new Deadline(o.maxTime * 1000),
      onEvent: (e) => progress.event(e),
      trustedKeys: settings.trustedKeys,
      ...(o.cachedir ? { cacheDir: o.cachedir } : {}),
      ...(settings.ca ? { ca: settings.ca } : {}),
      ...clientCertFrom(o),
      ...(o.tokenFrom ? { issuer: issuerOf(o) } : {}),
    });
    await runTasks(client, tasks, o.jobs, progress);
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`signtool: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(exitCodeOf(err));
});

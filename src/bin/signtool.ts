#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { parseDuration } from "../client/duration.js";
import { ClientError } from "../client/errors.js";
import { nodeUrl } from "../client/nodes.js";
import { describeResult, Progress } from "../client/progress.js";
import { SigningClient, type SignResult, SUFFIXES } from "../client/signing-client.js";
import { requestToken } from "../client/token.js";
import { writeFileAtomic } from "../files/write-atomic.js";
import { PACKAGE_VERSION } from "../version.js";

/** A mistake on the command line: exit 2, like commander's own usage errors. */
class UsageError extends Error {}

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
  if (nodes.length === 0) throw new UsageError("give at least one node with -H host:port");
  return nodes.map((h) => nodeUrl(h, tls));
}

/** --client-cert and --client-key, both or neither. */
function clientCertFrom(o: { clientCert?: string; clientKey?: string }): {
  clientCert?: { cert: Buffer; key: Buffer };
} {
  if (!o.clientCert && !o.clientKey) return {};
  if (!o.clientCert || !o.clientKey) throw new UsageError("--client-cert and --client-key go together");
  return { clientCert: { cert: readFileSync(o.clientCert), key: readFileSync(o.clientKey) } };
}

/** `USER:PASSWORD_FILE` → issuer credentials. */
function issuerFrom(spec: string): { user: string; password: string } {
  const colon = spec.indexOf(":");
  if (colon < 1) throw new UsageError("--token-from takes USER:PASSWORD_FILE");
  return { user: spec.slice(0, colon), password: readSecretFile(spec.slice(colon + 1), "password file") };
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
  .command("sign")
  .description('"sign": upload files to any node and write their detached signatures')
  .argument("<files...>", "files to sign")
  .requiredOption("-t, --token-file <file>", "token file from the download-token step")
  .requiredOption("-n, --nonce-file <file>", "nonce file (created if missing; empty for a new token)")
  .requiredOption("-H, --host <host:port>", "a signing node (repeat for each node)", collect, [])
  .requiredOption("-f, --format <format>", "signing format, e.g. gpg or sshsig (repeatable)", collect, [])
  .option("-c, --cacert <file>", "CA or pinned server certificate (https)")
  .option("--client-cert <file>", "client certificate (PEM), for nodes that require mutual TLS")
  .option("--client-key <file>", "the client certificate's key (PEM, mode 0600)")
  .option("--cachedir <dir>", "keep signatures here by digest; a rerun uploads nothing")
  .addOption(
    new Option("-o, --output <file>", "signature file (one file, one format)").conflicts("outputDir"),
  )
  .option("--output-dir <dir>", "write signatures here instead of next to the files")
  .option("-j, --jobs <n>", "files signed concurrently", positiveInt, 4)
  .option("--max-time <time>", "per file, keep retrying through outages this long", durationArg, 900)
  .option(
    "--token-from <user:passwordfile>",
    "issuer credentials: fetch a new token when the current one is rejected",
  )
  .option("--slave-ip <ip>", "with --token-from: IP for new tokens (default: the current token's)")
  .option("--duration <time>", "with --token-from: lifetime of new tokens", durationArg, 7200)
  .action(async (files: string[], o) => {
    const formats: string[] = o.format;
    if (o.output && (files.length > 1 || formats.length > 1)) {
      throw new ClientError(
        "LOCAL_IO",
        "-o names one signature file: use it with one file and one format, or use --output-dir",
      );
    }
    const ca = o.cacert ? readFileSync(o.cacert) : undefined;
    let issuer: ConstructorParameters<typeof SigningClient>[0]["issuer"];
    if (o.tokenFrom) {
      const slaveIp = o.slaveIp ?? tokenIp(o.tokenFile);
      if (!slaveIp) throw new UsageError("--token-from needs --slave-ip when there is no readable token");
      issuer = { ...issuerFrom(o.tokenFrom), slaveIp, durationSeconds: o.duration };
    }
    const progress = new Progress(process.stderr);
    const client = new SigningClient({
      nodes: nodesFrom(o.host, Boolean(ca || o.clientCert)),
      tokenFile: o.tokenFile,
      nonceFile: o.nonceFile,
      maxTimeMs: o.maxTime * 1000,
      onEvent: (e) => progress.event(e),
      ...(o.cachedir ? { cacheDir: o.cachedir } : {}),
      ...(ca ? { ca } : {}),
      ...clientCertFrom(o),
      ...(issuer ? { issuer } : {}),
    });

    const started = Date.now();
    const outputOf = (file: string, format: string): string =>
      o.output ??
      (o.outputDir
        ? join(o.outputDir, `${basename(file)}${SUFFIXES[format] ?? ".sig"}`)
        : `${file}${SUFFIXES[format] ?? ".sig"}`);
    const tasks = files.flatMap((file) =>
      formats.map((format) => ({ file, format, output: outputOf(file, format) })),
    );
    // Two inputs must never write one signature file: the last would silently win.
    const seen = new Map<string, string>();
    for (const t of tasks) {
      const clash = seen.get(resolve(t.output));
      if (clash !== undefined) {
        throw new UsageError(
          `${clash} and ${t.file} would both write ${t.output}: sign them in separate runs or directories`,
        );
      }
      seen.set(resolve(t.output), t.file);
    }
    const results: SignResult[] = [];
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      for (let task = tasks[next++]; task; task = tasks[next++]) {
        const { file, format, output } = task;
        try {
          const r = await client.sign(file, format, output);
          results.push(r);
          progress.finished(file, format, describeResult(r));
        } catch (err) {
          failures.push(file);
          progress.finished(file, format, `FAILED ${basename(file)} [${format}]: ${(err as Error).message}`);
          if (err instanceof ClientError && err.code === "TOKEN_FILE") break;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.jobs, tasks.length) }, worker));

    const count = (s: SignResult["source"]) => results.filter((r) => r.source === s).length;
    const retries = client.retriesTotal;
    const skipped = tasks.length - results.length - failures.length;
    process.stderr.write(
      `signtool: ${results.length} signed (${count("signed")} newly, ${count("local-cache")} from local cache, ` +
        `${count("cluster-cache")} from cluster cache), ${failures.length} failed${skipped ? `, ${skipped} not attempted` : ""}, ` +
        `${retries} retries, ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
    if (failures.length || skipped) process.exitCode = 1;
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`signtool: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
});

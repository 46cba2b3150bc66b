import { constants, readFileSync } from "node:fs";
import { access } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import { CONFIG_ENV, readSigntoolConfig } from "./config-file.js";
import { ClientError, exitCodeOf } from "./errors.js";
import { nodeUrl } from "./nodes.js";
import { describeResult, type Progress } from "./progress.js";
import {
  EMBEDDED_FORMATS,
  FORMAT_NAME,
  type SigningClient,
  type SignResult,
  SUFFIXES,
} from "./signing-client.js";

/** One file in one format, and where its signature goes. */
export interface SignTask {
  file: string;
  format: string;
  output: string;
}

/** What `sign` runs with: the command line, filled in from the config file. */
export interface SignSettings {
  nodes: string[];
  formats: string[];
  ca?: Buffer;
  trustedKeys: Map<string, { text: string; from: string }>;
}

const usage = (message: string) => new ClientError("USAGE", message);

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw usage(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** `FORMAT=FILE` pairs (command line first) → each format's key text and where it came from. */
function trustedKeysFrom(
  pairs: string[],
  fromConfig: Record<string, string>,
): Map<string, { text: string; from: string }> {
  const out = new Map<string, { text: string; from: string }>();
  for (const [format, file] of Object.entries(fromConfig))
    out.set(format, { text: readText(file, "trusted key"), from: file });
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    const format = pair.slice(0, eq);
    if (eq < 1 || !FORMAT_NAME.test(format)) throw usage(`--trusted-key takes FORMAT=FILE, not "${pair}"`);
    const file = pair.slice(eq + 1);
    out.set(format, { text: readText(file, "trusted key"), from: file });
  }
  return out;
}

/**
 * The command line, with the config file's defaults (`--config`, else $SIGNTOOL_CONFIG) for
 * what it does not say. No format at all is a usage error: signing nothing must not pass as a
 * green build.
 */
export function signSettings(o: {
  config?: string;
  host: string[];
  format: string[];
  cacert?: string;
  clientCert?: string;
  trustedKey: string[];
}): SignSettings {
  const file = o.config ?? (process.env[CONFIG_ENV] || undefined);
  const config = file ? readSigntoolConfig(file) : {};
  const formats = o.format.length ? o.format : (config.formats ?? []);
  if (formats.length === 0)
    throw usage(
      `no format given: say which with -f (e.g. -f gpg), or set "formats" in a config file (--config, $${CONFIG_ENV})`,
    );
  for (const f of formats)
    if (!FORMAT_NAME.test(f))
      throw usage(`"${f}" is not a format name (e.g. gpg, gpg-clearsign, sshsig, minisign, authenticode)`);
  const cacert = o.cacert ?? config.cacert;
  const ca = cacert ? Buffer.from(readText(cacert, "CA file")) : undefined;
  const hosts = (o.host.length ? o.host : (config.hosts ?? [])).map((h) => h.trim()).filter(Boolean);
  if (hosts.length === 0) throw usage("give at least one node with -H host:port (or hosts in a config file)");
  return {
    nodes: hosts.map((h) => nodeUrl(h, Boolean(ca || o.clientCert))),
    formats,
    ...(ca ? { ca } : {}),
    trustedKeys: trustedKeysFrom(o.trustedKey, config.trustedKeys ?? {}),
  };
}

/** Where an output goes without -o: an embedded format's is the signed file itself, named apart. */
function defaultOutput(file: string, format: string, outputDir: string | undefined): string {
  if (EMBEDDED_FORMATS.has(format)) {
    // In a directory of its own it keeps its name; beside its input it becomes name.signed.ext
    // (the extension stays last: Windows and osslsigncode tell a file's type by it).
    if (outputDir) return join(outputDir, basename(file));
    const ext = extname(file);
    return `${file.slice(0, file.length - ext.length)}.signed${ext}`;
  }
  const suffix = SUFFIXES[format] ?? ".sig";
  return outputDir ? join(outputDir, `${basename(file)}${suffix}`) : `${file}${suffix}`;
}

/**
 * Every (file, format) and its output; two inputs that would write one file are refused.
 * `inPlace`: an embedded format's signed file replaces its input (renamed into place, whole).
 */
export function planTasks(
  files: string[],
  formats: string[],
  o: { output?: string; outputDir?: string; inPlace?: boolean },
): SignTask[] {
  if (o.output && (files.length > 1 || formats.length > 1))
    throw usage("-o names one signature file: use it with one file and one format, or use --output-dir");
  if (o.inPlace && (o.output || o.outputDir || formats.some((f) => !EMBEDDED_FORMATS.has(f))))
    throw usage(
      "--in-place replaces each file with its signed copy: only embedded formats (authenticode), without -o or --output-dir",
    );
  const outputOf = (file: string, format: string): string =>
    o.output ?? (o.inPlace ? file : defaultOutput(file, format, o.outputDir));
  const tasks = files.flatMap((file) =>
    formats.map((format) => ({ file, format, output: outputOf(file, format) })),
  );
  const seen = new Map<string, string>();
  for (const t of tasks) {
    const clash = seen.get(resolve(t.output));
    if (clash !== undefined)
      throw usage(
        `${clash} and ${t.file} would both write ${t.output}: sign them in separate runs or directories`,
      );
    seen.set(resolve(t.output), t.file);
  }
  return tasks;
}

/** Before any upload spends a nonce: every output's directory must take a new file. */
export async function checkOutputsWritable(tasks: SignTask[]): Promise<void> {
  for (const dir of new Set(tasks.map((t) => dirname(resolve(t.output))))) {
    try {
      await access(dir, constants.W_OK | constants.X_OK);
    } catch (err) {
      throw usage(
        `cannot write signatures to ${dir}: ${(err as NodeJS.ErrnoException).code ?? "not writable"}`,
      );
    }
  }
}

/**
 * Signs every task, `jobs` at a time, printing a line per file and a summary. Stops taking new
 * tasks when the token file is unusable or the setup is wrong (every file would fail alike),
 * and sets the exit code: 0 only when every output was written and verified.
 */
export async function runTasks(
  client: SigningClient,
  tasks: SignTask[],
  jobs: number,
  progress: Progress,
): Promise<void> {
  const started = Date.now();
  const results: SignResult[] = [];
  const failures: string[] = [];
  let stop: ClientError | undefined;
  let next = 0;
  const worker = async () => {
    for (let task = tasks[next++]; task && !stop; task = tasks[next++]) {
      const { file, format, output } = task;
      try {
        const r = await client.sign(file, format, output);
        results.push(r);
        progress.finished(file, format, describeResult(r));
      } catch (err) {
        failures.push(file);
        progress.finished(file, format, `FAILED ${basename(file)} [${format}]: ${(err as Error).message}`);
        if (err instanceof ClientError && (err.code === "TOKEN_FILE" || err.code === "CONFIG")) stop = err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, tasks.length) }, worker));
  const count = (s: SignResult["source"]) => results.filter((r) => r.source === s).length;
  const skipped = tasks.length - results.length - failures.length;
  process.stderr.write(
    `signtool: ${results.length} signed (${count("signed")} newly, ${count("local-cache")} from local cache, ` +
      `${count("cluster-cache")} from cluster cache), ${failures.length} failed${skipped ? `, ${skipped} not attempted` : ""}, ` +
      `${client.retriesTotal} retries, ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
  );
  if (stop) process.exitCode = exitCodeOf(stop);
  else if (failures.length || skipped) process.exitCode = 1;
}

/**
 * `node dist/scripts/local-ctl.js`: restart, stop or start one process of the running local
 * cluster (`npm start`), or list them, through the control that cluster.json names
 * (scripts/local-control.ts). The cluster is found in $SIGNING_STATE_DIR/cluster.json (default
 * .local/ in the checkout, as npm start uses), or --state-dir DIR.
 */
import { existsSync, readFileSync } from "node:fs";
import { relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SigningClusterError } from "../src/errors.js";
import { askControl, type ControlEntry, type ProcessInfo } from "./local-control.js";

const root = resolve(fileURLToPath(import.meta.url), "../../..");

const USAGE = `usage: node dist/scripts/local-ctl.js [--state-dir DIR] [--json] <command> [id] [--kill]

  ps               the local cluster's processes: id, kind, state, pid, url, log file
  restart <id>     stop it (SIGTERM: a node finishes its jobs first; --kill: SIGKILL) and start
                   it again on the same port, with the same id and log file; returns once it is
                   ready (/readyz 200)
  stop <id>        stop it and leave it stopped (--kill: SIGKILL, as a crash would)
  start <id>       start it again if it is stopped (nothing to do if it runs); returns once ready

ids: local-0, local-1, local-2 (the nodes), local-monitor, redis (npm start's own Redis: it keeps
no data, so restarting it is a Redis restart with data loss).
The cluster: $SIGNING_STATE_DIR/cluster.json (default .local/cluster.json in the checkout).
Exit status: 0 done, 1 the action failed, 2 usage or no running cluster.`;

/** Exit 2: a mistake on the command line (with the usage), or no such process or cluster (without). */
class UsageError extends SigningClusterError<"USAGE"> {
  constructor(
    message: string,
    readonly showUsage = true,
  ) {
    super("USAGE", message);
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const shown = (file: string | null) => {
  if (!file) return "-";
  const rel = relative(process.cwd(), file);
  return rel.startsWith("..") ? file : rel;
};

function line(p: ProcessInfo): string[] {
  return [p.id, p.kind, p.running ? "running" : "stopped", String(p.pid ?? "-"), p.url, shown(p.log)];
}

async function main(argv: string[]): Promise<number> {
  let stateDir = process.env.SIGNING_STATE_DIR || resolve(root, ".local");
  let json = false;
  let kill = false;
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--state-dir") {
      const dir = argv[++i];
      if (!dir) throw new UsageError("--state-dir needs a directory");
      stateDir = dir;
    } else if (a === "--json") json = true;
    else if (a === "--kill") kill = true;
    else if (a === "-h" || a === "--help" || a === "help") {
      console.log(USAGE);
      return 0;
    } else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
    else words.push(a);
  }
  const [command, id, extra] = words;
  if (!command) throw new UsageError("no command");
  if (extra !== undefined) throw new UsageError(`unexpected argument ${extra}`);
  const file = resolve(stateDir, "cluster.json");
  if (!existsSync(file))
    throw new UsageError(`no ${file}: start the local cluster with npm start (or give --state-dir)`, false);
  const cluster = JSON.parse(readFileSync(file, "utf8")) as { control?: ControlEntry };
  if (!cluster.control?.url)
    throw new UsageError(`${file} names no control: a cluster of an older npm start? restart it`, false);

  if (command === "ps") {
    if (id !== undefined) throw new UsageError("ps takes no id");
    const { body } = await askControl(cluster.control, "GET", "/processes");
    const processes = body.processes ?? [];
    if (json) console.log(JSON.stringify(processes, null, 2));
    else console.log(table([["ID", "KIND", "STATE", "PID", "URL", "LOG"], ...processes.map(line)]));
    return 0;
  }
  if (command !== "restart" && command !== "stop" && command !== "start")
    throw new UsageError(`unknown command ${command}`);
  if (!id) throw new UsageError(`${command} needs a process id (see ps)`);
  if (kill && command === "start") throw new UsageError("--kill goes with stop or restart");
  const { status, body } = await askControl(
    cluster.control,
    "POST",
    `/processes/${encodeURIComponent(id)}/${command}${kill ? "?kill=1" : ""}`,
  );
  if (status === 404 || status === 401) throw new UsageError(body.error ?? `HTTP ${status}`, false);
  if (json) console.log(JSON.stringify(body, null, 2));
  const p = body.process;
  const where = p ? `${p.url}, pid ${p.pid ?? "-"}${p.log ? `, log ${shown(p.log)}` : ""}` : "";
  if (status !== 200) {
    console.error(
      `local-ctl: ${command} ${id} failed: ${body.error ?? `HTTP ${status}`}${where ? ` (${where})` : ""}`,
    );
    return 1;
  }
  if (!json) console.log(`${id} (${p?.kind}) ${body.done}: ${where}`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    const usage = err instanceof UsageError && err.showUsage ? `\n\n${USAGE}` : "";
    console.error(`local-ctl: ${err.message}${usage}`);
    process.exitCode = 2;
  },
);

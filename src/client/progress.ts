import { basename } from "node:path";
import type { ClientEvent, SignResult } from "./signing-client.js";

const LABEL: Record<ClientEvent["phase"], string> = {
  hashing: "hashing",
  checking: "looking for a signature",
  uploading: "uploading",
  signing: "waiting for the signature",
  downloading: "downloading",
  retrying: "retrying",
  token: "fetching a new token",
};

/**
 * Per-file progress: on a terminal, one line per file redrawn in place; otherwise (CI logs),
 * plain timestamped lines. Everything goes to stderr so stdout stays for results.
 */
export class Progress {
  private readonly lines = new Map<string, string>();
  private drawn = 0;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly tty = Boolean(out.isTTY),
  ) {}

  event(e: ClientEvent): void {
    const key = `${e.file}\u0000${e.format}`;
    const text = `${basename(e.file)} [${e.format}] ${LABEL[e.phase]}${e.node ? ` @ ${e.node}` : ""}${e.detail ? `: ${e.detail}` : ""}`;
    if (this.tty) {
      this.lines.set(key, text);
      this.redraw();
    } else if (e.phase === "uploading" || e.phase === "retrying" || e.phase === "token") {
      this.out.write(`${new Date().toISOString()} signtool: ${text}\n`);
    }
  }

  finished(file: string, format: string, line: string): void {
    if (this.tty) {
      this.lines.delete(`${file}\u0000${format}`);
      this.clear();
      this.out.write(`${line}\n`);
      this.redraw();
    } else {
      this.out.write(`${new Date().toISOString()} signtool: ${line}\n`);
    }
  }

  private clear(): void {
    if (this.drawn) this.out.write(`\u001b[${this.drawn}A\u001b[J`);
    this.drawn = 0;
  }

  private redraw(): void {
    this.clear();
    const width = this.out.columns || 100;
    for (const line of this.lines.values()) this.out.write(`${line.slice(0, width - 1)}\n`);
    this.drawn = this.lines.size;
  }
}

export function describeResult(r: SignResult): string {
  const how = { signed: "signed", "local-cache": "from local cache", "cluster-cache": "from cluster cache" }[
    r.source
  ];
  return `ok ${basename(r.file)} [${r.format}] ${how} -> ${r.output} (${(r.durationMs / 1000).toFixed(1)} s${r.retries ? `, ${r.retries} retries` : ""})`;
}

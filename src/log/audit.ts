import { createWriteStream, type WriteStream } from "node:fs";

/**
 * The audit trail: one JSON line per token issued or revoked and per signature made, appended
 * to its own file (mode 0600), separate from the debug log. Fields are documented in the
 * docs/security.md ("Audit log"); it never holds a token, a nonce, a password or a key.
 */
export type AuditRecord =
  | {
      event: "token_issued";
      issuer: string;
      from: string;
      slaveIp: string;
      tokenHash: string;
      expiresAt: string;
      formats?: string[];
    }
  | { event: "token_revoked"; issuer: string; from: string; tokenHash: string }
  | {
      event: "signed";
      format: string;
      sha256: string;
      bytes: number;
      keyFingerprint: string;
      tokenHash?: string;
      from?: string;
    };

export class AuditLog {
  private readonly stream: WriteStream | undefined;

  constructor(
    file: string | undefined,
    private readonly node: string,
    onError: (err: Error) => void = () => {},
  ) {
    this.stream = file ? createWriteStream(file, { flags: "a", mode: 0o600 }) : undefined;
    // A full disk must not take the node down: it is reported (logged) instead.
    this.stream?.on("error", onError);
  }

  write(record: AuditRecord): void {
    // One write per line: appends from several processes to one file do not interleave.
    this.stream?.write(`${JSON.stringify({ time: new Date().toISOString(), node: this.node, ...record })}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.stream ? this.stream.end(resolve) : resolve()));
  }
}

import { appendFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { freePort } from "./redis-server.js";

interface WebhookAlert {
  status?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  startsAt?: string;
  endsAt?: string;
}

/** One alert as a console line: what a pager would show. */
export function alertLine(receiver: string, a: WebhookAlert): string {
  const l = a.labels ?? {};
  const status = (a.status ?? "?").toUpperCase();
  const runbook = a.annotations?.runbook_url ? ` (runbook: ${a.annotations.runbook_url})` : "";
  return `alert [${l.severity ?? "?"}] ${status} ${l.alertname ?? "?"} via ${receiver}: ${a.annotations?.summary ?? ""}${runbook}`;
}

/**
 * npm start's pager: an Alertmanager-compatible webhook receiver on loopback that prints each
 * alert it gets and appends it, as a JSON line, to `logFile`, so that a newcomer sees pages
 * arrive. The monitor posts to it, or a local Alertmanager does (scripts/alertmanager.ts).
 */
export class AlertReceiver {
  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(logFile: string, print: (line: string) => void = console.log): Promise<AlertReceiver> {
    // There from the start: an empty file says "no alert yet", a missing one says nothing.
    appendFileSync(logFile, "", { mode: 0o600 });
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        let payload: { receiver?: string; alerts?: WebhookAlert[] };
        try {
          payload = JSON.parse(Buffer.concat(chunks).toString());
        } catch {
          print(`alert receiver: a ${req.method} ${req.url} that is not JSON, ignored`);
          res.writeHead(400).end();
          return;
        }
        const receiver = payload.receiver ?? "?";
        for (const a of payload.alerts ?? []) {
          // Kept before printed: whoever sees the line can read the record behind it.
          appendFileSync(logFile, `${JSON.stringify({ at: new Date().toISOString(), receiver, ...a })}\n`, {
            mode: 0o600,
          });
          print(alertLine(receiver, a));
        }
        res.writeHead(200).end();
      });
    });
    const port = await freePort();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    return new AlertReceiver(server, `http://127.0.0.1:${port}/alerts`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

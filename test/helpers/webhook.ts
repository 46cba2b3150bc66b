import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export interface ReceivedAlert {
  status: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
}

/** An Alertmanager-style webhook receiver: records every payload it is sent. */
export class WebhookReceiver {
  readonly payloads: { version: string; status: string; alerts: ReceivedAlert[] }[] = [];
  /** Answer this many requests with 500 first, to exercise the sender's retries. */
  failNext = 0;
  /** While true, requests are recorded in `hung` and never answered: a receiver that hangs. */
  hang = false;
  /** The bodies of the requests left unanswered, in arrival order. */
  readonly hung: unknown[] = [];
  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<WebhookReceiver> {
    let self: WebhookReceiver | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (self?.hang) {
          self.hung.push(JSON.parse(Buffer.concat(chunks).toString()));
          return;
        }
        if (self && self.failNext > 0) {
          self.failNext--;
          res.writeHead(500).end();
          return;
        }
        self?.payloads.push(JSON.parse(Buffer.concat(chunks).toString()));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    self = new WebhookReceiver(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}/alerts`);
    return self;
  }

  alerts(name?: string, status?: string): ReceivedAlert[] {
    return this.payloads
      .flatMap((p) => p.alerts)
      .filter((a) => (!name || a.labels.alertname === name) && (!status || a.status === status));
  }

  async waitFor(name: string, status: string, timeoutMs = 15_000): Promise<ReceivedAlert> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.alerts(name, status)[0];
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(
          `no ${status} ${name} within ${timeoutMs} ms; got ${JSON.stringify(this.alerts().map((a) => `${a.labels.alertname}:${a.status}`))}`,
        );
      }
      await sleep(50);
    }
  }

  close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    return closed;
  }
}

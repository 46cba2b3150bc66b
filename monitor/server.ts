/** The monitor's HTTP server: /metrics, /readyz, /livez, /status. */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { SigningClusterError } from "../src/errors.js";
import { type HealthSources, monitorStatus, readiness } from "./health.js";
import type { MonitorMetrics } from "./metrics.js";

/** Where the monitor's HTTP server listens and what it serves. */
export interface MonitorServerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  metrics: MonitorMetrics;
  health: HealthSources;
}

/** The listening server: its address, and how to stop it. */
export interface MonitorServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

const json = { "Content-Type": "application/json" };

/**
 * The monitor's HTTP face: /metrics for Prometheus, /readyz and /livez for supervisors,
 * /status for `signing-admin status`; anything else is a JSON 404.
 */
export async function startMonitorServer(o: MonitorServerOptions): Promise<MonitorServer> {
  const server = createServer(async (req, res) => {
    if (req.url === "/status") {
      res.writeHead(200, json);
      res.end(JSON.stringify(monitorStatus(o.health)));
    } else if (req.url === "/metrics") {
      res.setHeader("Content-Type", o.metrics.registry.contentType);
      res.end(await o.metrics.registry.metrics());
    } else if (req.url === "/readyz" || req.url === "/livez") {
      const body = readiness(o.health);
      // /livez only says the process answers; /readyz that the detection loop runs.
      res.writeHead(body.status === "ok" || req.url === "/livez" ? 200 : 503, json);
      res.end(JSON.stringify(body));
    } else {
      res.writeHead(404, json);
      res.end(
        JSON.stringify({ error: { code: "NOT_FOUND", message: "no such endpoint", retryable: false } }),
      );
    }
  });
  await listen(server, o.port, o.host);
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${o.host}:${port}`,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Listens; a port taken by another process is the operator's to fix: PORT_IN_USE, one line. */
function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        err.code === "EADDRINUSE"
          ? new SigningClusterError(
              "PORT_IN_USE",
              `monitor.port ${port} on ${host} is already in use (another monitor running?)`,
            )
          : err,
      ),
    );
    server.listen(port, host, resolve);
  });
}

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildMonitorConfig } from "../../monitor/config.js";
import { type RunningMonitor, startMonitor } from "../../monitor/monitor.js";
import { createLogger } from "../../src/log/logger.js";

export interface TestMonitorOptions {
  redisUrl: string;
  nodes?: string[];
  webhookUrl?: string;
  stateDir?: string;
  monitor?: Record<string, unknown>;
  spike?: Record<string, unknown>;
  alerts?: Record<string, unknown>;
}

/**
 * A monitor in this process, checking every second and snapshotting every second. A state
 * directory it made itself is removed when it closes.
 */
export async function startTestMonitor(o: TestMonitorOptions): Promise<RunningMonitor> {
  const ownDir = o.stateDir === undefined ? mkdtempSync(join(tmpdir(), "signing-monitor-")) : undefined;
  const removeOwnDir = () => {
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
  };
  const raw = {
    monitor: {
      port: 0,
      stateDir: o.stateDir ?? ownDir,
      detectCron: "* * * * * *",
      snapshotCron: "* * * * * *",
      eventHoldSeconds: 5,
      ...o.monitor,
    },
    redis: { url: o.redisUrl },
    nodes: o.nodes ?? [],
    spike: { scrapeCron: "* * * * * *", forSeconds: 2, ...o.spike },
    // A test that gives no receiver does not look at alerts: it says so, as a config must.
    // A short minimum firing time: the hold is exercised without waiting out the default.
    alerts: {
      ...(o.webhookUrl ? { webhookUrl: o.webhookUrl } : { enabled: false }),
      retries: 3,
      minFiringSeconds: 1,
      ...o.alerts,
    },
    log: { level: "silent" },
  };
  try {
    const loaded = buildMonitorConfig(raw, "/", {});
    // TEST_MONITOR_LOG=1 shows the monitor's log when a test needs explaining.
    const monitor = await startMonitor(loaded, {
      log: createLogger(process.env.TEST_MONITOR_LOG ? "debug" : "silent", "monitor"),
    });
    return {
      ...monitor,
      async close() {
        await monitor.close();
        removeOwnDir();
      },
    };
  } catch (err) {
    removeOwnDir();
    throw err;
  }
}

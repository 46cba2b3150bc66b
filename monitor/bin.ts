#!/usr/bin/env node
import { parseArgs } from "node:util";
import { hasCode } from "../src/errors.js";
import { linkToParent } from "../src/process/parent-link.js";
import { runMain } from "../src/process/run-main.js";
import { PACKAGE_VERSION } from "../src/version.js";
import { loadMonitorConfigFile } from "./config.js";
import { startMonitor } from "./monitor.js";

const USAGE = `usage: signing-monitor --config FILE   (or SIGNING_MONITOR_CONFIG; SIGNING_MONITOR__a__b=value overrides key a.b)
       signing-monitor --version`;

async function main(): Promise<number | "serving"> {
  const { values } = parseArgs({
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "V" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.version) {
    console.log(PACKAGE_VERSION);
    return 0;
  }
  const file = values.config ?? process.env.SIGNING_MONITOR_CONFIG;
  if (!file) {
    console.error(`no configuration given\n${USAGE}`);
    return 2;
  }
  const parent = linkToParent();
  const monitor = await startMonitor(loadMonitorConfigFile(file));
  // close() waits for the work in flight (a re-seed under the epoch lock) before Redis goes.
  const stop = () =>
    void monitor.close().then(
      () => process.exit(0),
      (err: Error) => {
        monitor.log.error({ event: "shutdown_failed", err: err.message });
        process.exit(1);
      },
    );
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  parent?.listening(monitor.url, stop);
  return "serving";
}

// A bad config (ConfigError is CONFIG_INVALID), an unusable state dir, a port taken: one line, exit 2.
runMain("signing-monitor", main, (err) => hasCode(err, "CONFIG_INVALID", "PORT_IN_USE"));

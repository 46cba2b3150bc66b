import { writeFileSync } from "node:fs";

/**
 * Preloaded into a child process (`node --import`): as it exits, its peak resident set over
 * its whole life (getrusage's maxrss), in bytes, goes to $PEAK_RSS_FILE. Exact where sampling
 * /proc/PID/status from outside could miss a peak just before the exit.
 */
const file = process.env.PEAK_RSS_FILE;
if (file) process.on("exit", () => writeFileSync(file, String(process.resourceUsage().maxRSS * 1024)));

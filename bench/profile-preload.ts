/**
 * Loaded into a node process with `NODE_OPTIONS=--import=…/profile-preload.js` by
 * bench/large-file-profile.ts: SIGUSR2 starts V8's CPU profiler on the main thread, SIGUSR1
 * stops it and writes the profile to `$BENCH_PROFILE_OUT.<pid>.cpuprofile`. Never loaded by a
 * node outside that benchmark.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";

const out = process.env.BENCH_PROFILE_OUT;
if (out) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 250 });
  process.on("SIGUSR2", () => session.post("Profiler.start"));
  process.on("SIGUSR1", () =>
    session.post("Profiler.stop", (err, r) => {
      if (!err) writeFileSync(`${out}.${process.pid}.cpuprofile`, JSON.stringify(r.profile));
    }),
  );
}

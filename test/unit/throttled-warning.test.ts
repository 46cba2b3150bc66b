import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { pino } from "pino";
import { ThrottledWarning } from "../../src/log/throttled.js";

test("a throttled warning: one line per key per interval, counting the ones it dropped", () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  let nowMs = 1_000_000;
  const warning = new ThrottledWarning(pino({ level: "info" }, sink), 10_000, () => nowMs);
  const say = (reason: string) => warning.warn(reason, { event: "token_check_degraded", reason });

  say("timeout"); // logged
  say("breaker_open"); // another key: logged
  for (let i = 0; i < 5; i++) {
    nowMs += 1000;
    say("breaker_open"); // within 10 s of its last line: dropped
  }
  nowMs += 5000; // 10 s after the first breaker_open line
  say("breaker_open");
  say("timeout");

  assert.deepEqual(
    lines.map((l) => [l.level, l.reason, l.suppressed]),
    [
      [40, "timeout", 0],
      [40, "breaker_open", 0],
      [40, "breaker_open", 5],
      [40, "timeout", 0],
    ],
  );
});

import { Writable } from "node:stream";

/** A node's log destination for tests: each JSON line it writes is parsed and kept in `lines`. */
export function jsonLogSink(lines: Record<string, unknown>[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
}

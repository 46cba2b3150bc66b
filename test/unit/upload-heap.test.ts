import assert from "node:assert/strict";
import { test } from "node:test";
import { tuneHeapForUploads } from "../../src/bin/upload-heap.js";

test("the node's heap setting yields to a --heap-growing-percent the operator gave node", () => {
  assert.equal(tuneHeapForUploads(["--heap-growing-percent=150"]), false);
  assert.equal(tuneHeapForUploads(["--heap_growing_percent", "150"]), false);
  assert.equal(tuneHeapForUploads(["--max-old-space-size=512"]), true);
});

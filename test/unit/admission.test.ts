import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { NodeMetrics } from "../../src/metrics/node-metrics.js";
import { Admission, type AdmissionOptions, type Admitted, type Slot } from "../../src/signing/admission.js";

/** The line in front of signing.maxPending, on its own (the node's tests: admission.test.ts). */

function admission(o: Partial<Omit<AdmissionOptions, "metrics">> = {}) {
  const metrics = new NodeMetrics();
  const a = new Admission({
    ...{ maxPending: 1, maxPendingPerIp: 10, waitMs: 60_000, maxQueued: 10 },
    ...o,
    metrics,
  });
  const gauge = async (name: string) =>
    (await metrics.registry.getSingleMetricAsString(name)).split("\n").find((l) => l.startsWith(`${name} `));
  return { a, metrics, gauge };
}

function slotOf(admitted: Admitted): Slot {
  assert.ok("slot" in admitted, `admitted, not ${JSON.stringify(admitted)}`);
  return admitted.slot;
}

describe("admission", () => {
  test("waiters get places in the order they came, and a newcomer never overtakes them", async () => {
    const { a } = admission();
    const first = slotOf(await a.admit("10.0.0.1"));
    const order: string[] = [];
    const waits = ["b", "c", "d"].map((name) =>
      Promise.resolve(a.admit(`10.0.1.${name.charCodeAt(0)}`)).then((r) => {
        order.push(name);
        return slotOf(r);
      }),
    );
    first.release();
    // The freed place went to the head of the line at once: a newcomer finds the node full.
    const late = Promise.resolve(a.admit("10.0.2.1")).then((r) => {
      order.push("late");
      return slotOf(r);
    });
    for (const w of waits) (await w).release();
    (await late).release();
    assert.deepEqual(order, ["b", "c", "d", "late"]);
    assert.equal(a.pending, 0);
  });

  test("a waiter counts against its address: one client cannot fill the line", async () => {
    const { a } = admission({ maxPendingPerIp: 2 });
    const held = slotOf(await a.admit("10.0.0.1"));
    const waiting = a.admit("10.0.0.1");
    assert.ok(waiting instanceof Promise, "the second waits in line");
    assert.deepEqual(await a.admit("10.0.0.1"), { refused: "busy" }, "the third is refused at once");
    const other = a.admit("10.0.0.2");
    held.release();
    const second = slotOf(await waiting);
    second.release();
    slotOf(await other).release();
    assert.equal(a.pending, 0);
  });

  test("a full line, a zero wait and a wait that runs out all refuse", async () => {
    const full = admission({ maxQueued: 1 });
    const held = slotOf(await full.a.admit("10.0.0.1"));
    const waiting = full.a.admit("10.0.0.2");
    assert.deepEqual(await full.a.admit("10.0.0.3"), { refused: "busy" });
    held.release();
    slotOf(await waiting).release();

    const zero = admission({ waitMs: 0 });
    const held0 = slotOf(await zero.a.admit("10.0.0.1"));
    assert.deepEqual(await zero.a.admit("10.0.0.2"), { refused: "busy" });
    held0.release();

    const short = admission({ waitMs: 20 });
    const heldS = slotOf(await short.a.admit("10.0.0.1"));
    assert.deepEqual(await short.a.admit("10.0.0.2"), { refused: "busy" });
    assert.match((await short.gauge("signing_admission_queue")) ?? "", / 0$/);
    heldS.release();
    assert.equal(short.a.pending, 0);
    // Its place was given back: the address may wait again.
    slotOf(await short.a.admit("10.0.0.2")).release();
  });

  test("a waiter whose client leaves is out of the line; a node that stops refuses every waiter", async () => {
    const { a, gauge } = admission({ maxQueued: 2 });
    const held = slotOf(await a.admit("10.0.0.1"));
    const gone = new AbortController();
    const leaving = a.admit("10.0.0.2", gone.signal);
    const staying = a.admit("10.0.0.3");
    gone.abort();
    assert.deepEqual(await leaving, { refused: "busy" });
    assert.match((await gauge("signing_admission_queue")) ?? "", / 1$/);
    a.close();
    assert.deepEqual(await staying, { refused: "closed" });
    assert.deepEqual(await a.admit("10.0.0.4"), { refused: "closed" });
    held.release();
    assert.equal(a.pending, 0);
    assert.match((await gauge("signing_inflight_jobs")) ?? "", / 0$/);
  });

  test("every decision is one observation of signing_admission_wait_seconds", async () => {
    const { a, metrics } = admission({ waitMs: 20 });
    const held = slotOf(await a.admit("10.0.0.1"));
    await a.admit("10.0.0.2");
    held.release();
    const text = await metrics.registry.getSingleMetricAsString("signing_admission_wait_seconds");
    assert.match(text, /^signing_admission_wait_seconds_count 2$/m);
  });
});

import assert from "node:assert/strict";
import { createServer, IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import express from "express";
import { expressServerObjects } from "../../src/http/server-objects.js";

// The guard on a patched dependency internal (src/http/server-objects.ts): these fail when an
// express or node upgrade changes how requests get their prototypes. Then measure the patch
// again (docs/performance.md, "Patched dependency internals") before adapting it, or delete it.

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test("requests and responses are born with express's prototypes, and express still works on them", async (t) => {
  const app = express();
  app.set("title", "objects");
  const seen: { born: object; handled: object; bornRes: object; handledRes: object }[] = [];
  const born = new WeakMap<object, object>();
  app.get("/echo", (req, res) => {
    seen.push({
      born: born.get(req) as object,
      handled: Object.getPrototypeOf(req) as object,
      bornRes: born.get(res) as object,
      handledRes: Object.getPrototypeOf(res) as object,
    });
    res.set("X-Title", req.app.get("title") as string);
    res
      .status(201)
      .json({ ip: req.ip, q: req.query.q, ua: req.get("user-agent"), node: req instanceof IncomingMessage });
  });
  app.use((_req: express.Request, res: express.Response) => res.status(404).json({ code: "NOT_FOUND" }));

  const objects = expressServerObjects(app);
  const server = createServer(objects, app);
  // Runs before express's listener: the objects as the server made them.
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    born.set(req, Object.getPrototypeOf(req) as object);
    born.set(res, Object.getPrototypeOf(res) as object);
  });
  const base = await listen(server);
  t.after(() => server.close());

  const res = await fetch(`${base}/echo?q=abc`, { headers: { "user-agent": "probe/1" } });
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("x-title"), "objects");
  assert.deepEqual(await res.json(), { ip: "127.0.0.1", q: "abc", ua: "probe/1", node: true });
  const missing = await fetch(`${base}/nowhere`);
  assert.equal(missing.status, 404);
  assert.deepEqual(await missing.json(), { code: "NOT_FOUND" });

  assert.equal(seen.length, 1);
  const [s] = seen;
  assert.ok(s);
  // Express's setPrototypeOf found nothing to change: the prototype at birth is the app's.
  assert.equal(s.born, app.request);
  assert.equal(s.handled, app.request);
  assert.equal(s.bornRes, app.response);
  assert.equal(s.handledRes, app.response);
  assert.equal(app.request, objects.IncomingMessage.prototype);
  assert.equal(Object.getPrototypeOf(app.request), IncomingMessage.prototype);
});

test("a server built without them (as supertest builds one) still serves the app", async (t) => {
  const app = express();
  app.get("/", (_req, res) => res.json({ ok: true }));
  expressServerObjects(app);
  const server = createServer(app);
  const base = await listen(server);
  t.after(() => server.close());
  const res = await fetch(base);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { ok: true });
});

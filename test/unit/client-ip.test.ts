import assert from "node:assert/strict";
import { test } from "node:test";
import { CidrList } from "../../src/http/cidr.js";
import { resolveClientIp } from "../../src/http/client-ip.js";

test("X-Forwarded-For: believed from trusted proxies only, and failing closed", () => {
  const trusted = new CidrList(["10.0.0.0/8"]);
  // Not from a proxy: the header is ignored.
  assert.equal(resolveClientIp("192.168.1.5", "10.1.1.1", trusted), "192.168.1.5");
  // Through two proxies: the right-most address that is not a proxy is the client.
  assert.equal(resolveClientIp("10.0.0.1", "203.0.113.9, 10.0.0.2", trusted), "203.0.113.9");
  // A client prepending a fake address gains nothing: the proxy's own entry comes first from the right.
  assert.equal(resolveClientIp("10.0.0.1", "198.51.100.1, 203.0.113.9", trusted), "203.0.113.9");
  // Only trusted addresses (the left end may be the client's own invention), or garbage: the peer.
  assert.equal(resolveClientIp("10.0.0.1", "10.9.9.9, 10.0.0.5", trusted), "10.0.0.1");
  assert.equal(resolveClientIp("10.0.0.1", "203.0.113.9, not-an-ip", trusted), "10.0.0.1");
  assert.equal(resolveClientIp("::ffff:10.0.0.1", "203.0.113.9", trusted), "203.0.113.9");
});

test("CidrList answers the same the first time, the second, and past its bound of remembered addresses", () => {
  const list = new CidrList(["10.0.0.0/8", "2001:db8::/32"]);
  const cases: [string, boolean][] = [];
  for (let i = 0; i < 6000; i++) {
    const b = (i >> 8) & 0xff;
    const c = i & 0xff;
    cases.push([`10.${b}.${c}.1`, true], [`11.${b}.${c}.1`, false], [`::ffff:10.${b}.${c}.2`, true]);
  }
  cases.push(["2001:db8::1", true], ["2001:db9::1", false], ["not-an-ip", false], ["", false]);
  for (let round = 0; round < 2; round++)
    for (const [ip, allowed] of cases) assert.equal(list.has(ip), allowed, `${ip}, round ${round}`);
});

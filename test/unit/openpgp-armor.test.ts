import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import * as openpgp from "openpgp";
import { armorSignature } from "../../src/signing/openpgp-packet.js";

test("armorSignature writes what openpgp.armor writes, CRC-24 line included, at every length", async () => {
  // Packet sizes around the 45-byte line boundary and the real ones (Ed25519 ~119, RSA-4096 ~566).
  for (let len = 0; len <= 700; len++) {
    const packet = randomBytes(len);
    const theirs = openpgp.armor(
      openpgp.enums.armor.signature,
      packet,
      undefined,
      undefined,
      undefined,
      true,
    );
    assert.equal(armorSignature(packet), theirs, `length ${len}`);
  }
});

test("armorSignature reads back with openpgp.js as the same packet, from a Buffer view too", async () => {
  const backing = randomBytes(300);
  const packet = backing.subarray(17, 17 + 119);
  const { type, data } = await openpgp.unarmor(armorSignature(packet));
  assert.equal(type, openpgp.enums.armor.signature);
  assert.deepEqual(Buffer.from(data as Uint8Array), Buffer.from(packet));
});

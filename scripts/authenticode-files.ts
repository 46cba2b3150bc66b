import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";

/**
 * Real inputs for Authenticode, shared by the tests and the benchmarks: PE executables osslsigncode
 * signs and Windows would load, a PowerShell script, and `osslsigncode verify`.
 */

/** PE headers and file alignment: the one section starts at the file's second 512 bytes. */
const HEADERS = 0x200;
const SECTION_ALIGNMENT = 0x1000;
const alignUp = (n: number, to: number) => Math.ceil(n / to) * to;

/** `xor eax, eax; ret`: the entry point's code, first in the .text section. */
const CODE = Buffer.from([0x31, 0xc0, 0xc3]);

/**
 * The headers of a PE32 executable with one .text section of `sectionBytes` (a multiple of 512)
 * right after them: a DOS header pointing at the PE header, the COFF header, a PE32 optional
 * header with all 16 data directories (the certificate table is the 5th), the section table.
 */
function peHeaders(sectionBytes: number): Buffer {
  if (sectionBytes <= 0 || sectionBytes % HEADERS !== 0)
    throw new Error("a section is whole 512-byte blocks");
  const pe = Buffer.alloc(HEADERS);
  pe.write("MZ", 0, "latin1");
  pe.writeUInt32LE(0x40, 0x3c); // e_lfanew
  pe.write("PE\0\0", 0x40, "latin1");
  const coff = 0x44;
  pe.writeUInt16LE(0x14c, coff); // i386
  pe.writeUInt16LE(1, coff + 2); // one section
  pe.writeUInt16LE(0xe0, coff + 16); // SizeOfOptionalHeader
  pe.writeUInt16LE(0x0102, coff + 18); // executable, 32-bit
  const opt = 0x58;
  const virtualSize = sectionBytes === HEADERS ? CODE.length : sectionBytes;
  const fields: [number, number, 2 | 4][] = [
    [0, 0x10b, 2], // PE32
    [4, sectionBytes, 4], // SizeOfCode
    [16, SECTION_ALIGNMENT, 4], // AddressOfEntryPoint
    [20, SECTION_ALIGNMENT, 4], // BaseOfCode
    [24, SECTION_ALIGNMENT + alignUp(virtualSize, SECTION_ALIGNMENT), 4], // BaseOfData
    [28, 0x400000, 4], // ImageBase
    [32, SECTION_ALIGNMENT, 4], // SectionAlignment
    [36, HEADERS, 4], // FileAlignment
    [40, 4, 2], // MajorOperatingSystemVersion
    [48, 4, 2], // MajorSubsystemVersion
    [56, SECTION_ALIGNMENT + alignUp(virtualSize, SECTION_ALIGNMENT), 4], // SizeOfImage
    [60, HEADERS, 4], // SizeOfHeaders
    [68, 3, 2], // console subsystem
    [72, 0x100000, 4], // stack reserve
    [76, 0x1000, 4], // stack commit
    [80, 0x100000, 4], // heap reserve
    [84, 0x1000, 4], // heap commit
    [92, 16, 4], // NumberOfRvaAndSizes
  ];
  for (const [at, value, size] of fields) {
    if (size === 2) pe.writeUInt16LE(value, opt + at);
    else pe.writeUInt32LE(value, opt + at);
  }
  const section = opt + 0xe0;
  pe.write(".text", section, "latin1");
  pe.writeUInt32LE(virtualSize, section + 8); // VirtualSize
  pe.writeUInt32LE(SECTION_ALIGNMENT, section + 12); // VirtualAddress
  pe.writeUInt32LE(sectionBytes, section + 16); // SizeOfRawData
  pe.writeUInt32LE(HEADERS, section + 20); // PointerToRawData
  pe.writeUInt32LE(0x60000020, section + 36); // code, execute, read
  return pe;
}

/**
 * The smallest PE32 executable osslsigncode signs and Windows would load: the headers and one
 * .text section holding `xor eax, eax; ret`. The section takes `sectionBytes` in the file
 * (rounded up to the file alignment, 512): a caller makes large inputs, or inputs that differ, by
 * writing past the code at 0x203.
 */
export function minimalPe(sectionBytes = HEADERS): Buffer {
  const raw = Math.ceil(sectionBytes / HEADERS) * HEADERS;
  const pe = Buffer.alloc(HEADERS + raw);
  peHeaders(raw).copy(pe);
  CODE.copy(pe, HEADERS);
  return pe;
}

/**
 * Writes a PE32 executable of `bytes` (a multiple of 512, at least 1 KiB) to `path` without
 * holding it in memory: the headers, then one .text section of the code and pseudo-random bytes
 * (a random 1 MiB block, numbered per block so no two blocks are equal).
 */
export async function writeLargePe(path: string, bytes: number): Promise<void> {
  const sectionBytes = bytes - HEADERS;
  const block = randomBytes(1024 * 1024);
  async function* chunks() {
    yield peHeaders(sectionBytes);
    for (let at = 0, i = 0; at < sectionBytes; at += block.length, i++) {
      const b = Buffer.from(block.subarray(0, Math.min(block.length, sectionBytes - at)));
      b.writeUInt32LE(i, Math.min(b.length - 4, 16));
      if (at === 0) CODE.copy(b, 0);
      yield b;
    }
  }
  await pipeline(chunks(), createWriteStream(path));
}

/** A small PowerShell script with CRLF line endings, as Windows editors write them; `stamp` in a comment. */
export function powershellScript(stamp = ""): Buffer {
  const comment = stamp ? `# ${stamp.replace(/[\r\n]/g, " ")}\r\n` : "";
  return Buffer.from(`${comment}param([string]$Name = "world")\r\nWrite-Output "Hello, $Name"\r\n`);
}

/** `osslsigncode verify` of a signed file, trusting only `caFile`. */
export function osslsigncodeVerify(file: string, caFile: string): { ok: boolean; output: string } {
  const r = spawnSync("osslsigncode", ["verify", "-CAfile", caFile, "-in", file], {
    encoding: "utf8",
    env: { ...process.env, LC_ALL: "C" },
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  const output = r.stdout + r.stderr;
  return { ok: r.status === 0 && output.includes("Signature verification: ok"), output };
}

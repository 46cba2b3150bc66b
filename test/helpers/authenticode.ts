import { execFileSync, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The smallest PE32 executable osslsigncode signs and Windows would load: a DOS header pointing
 * at the PE header, the COFF header, a PE32 optional header with all 16 data directories (the
 * certificate table is the 5th), one .text section holding `xor eax, eax; ret`. The section
 * takes `sectionBytes` in the file (rounded up to the file alignment, 512): a caller makes large
 * inputs, or inputs that differ, by writing past the code at 0x203.
 */
export function minimalPe(sectionBytes = 0x200): Buffer {
  const raw = Math.ceil(sectionBytes / 0x200) * 0x200;
  const pe = Buffer.alloc(0x200 + raw);
  pe.write("MZ", 0, "latin1");
  pe.writeUInt32LE(0x40, 0x3c); // e_lfanew
  pe.write("PE\0\0", 0x40, "latin1");
  const coff = 0x44;
  pe.writeUInt16LE(0x14c, coff); // i386
  pe.writeUInt16LE(1, coff + 2); // one section
  pe.writeUInt16LE(0xe0, coff + 16); // SizeOfOptionalHeader
  pe.writeUInt16LE(0x0102, coff + 18); // executable, 32-bit
  const opt = 0x58;
  const fields: [number, number, 2 | 4][] = [
    [0, 0x10b, 2], // PE32
    [4, raw, 4], // SizeOfCode
    [16, 0x1000, 4], // AddressOfEntryPoint
    [20, 0x1000, 4], // BaseOfCode
    [24, 0x2000, 4], // BaseOfData
    [28, 0x400000, 4], // ImageBase
    [32, 0x1000, 4], // SectionAlignment
    [36, 0x200, 4], // FileAlignment
    [40, 4, 2], // MajorOperatingSystemVersion
    [48, 4, 2], // MajorSubsystemVersion
    [56, 0x2000, 4], // SizeOfImage
    [60, 0x200, 4], // SizeOfHeaders
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
  pe.writeUInt32LE(3, section + 8); // VirtualSize
  pe.writeUInt32LE(0x1000, section + 12); // VirtualAddress
  pe.writeUInt32LE(raw, section + 16); // SizeOfRawData
  pe.writeUInt32LE(0x200, section + 20); // PointerToRawData
  pe.writeUInt32LE(0x60000020, section + 36); // code, execute, read
  Buffer.from([0x31, 0xc0, 0xc3]).copy(pe, 0x200);
  return pe;
}

/** A small PowerShell script with CRLF line endings, as Windows editors write them. */
export function powershellScript(): Buffer {
  return Buffer.from('param([string]$Name = "world")\r\nWrite-Output "Hello, $Name"\r\n');
}

/** A throw-away code-signing PKI in `dir`: a CA, a leaf certificate with the codeSigning EKU, and an unrelated CA. */
export interface CodeSigningPki {
  caFile: string;
  otherCaFile: string;
  certFile: string;
  keyFile: string;
  pkcs12File: string;
  pkcs12Passphrase: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

function selfSignedCa(dir: string, name: string, cn: string): void {
  openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

export function makeCodeSigningPki(dir: string): CodeSigningPki {
  selfSignedCa(dir, "ca", "signing-cluster test CA");
  selfSignedCa(dir, "other-ca", "unrelated test CA");
  writeFileSync(
    join(dir, "leaf.cnf"),
    "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
  );
  openssl(dir, [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "leaf.key",
    "-out",
    "leaf.csr",
    "-subj",
    "/CN=signing-cluster test code signing",
  ]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-out",
    "leaf.pem",
    "-extfile",
    "leaf.cnf",
    "-extensions",
    "leaf",
  ]);
  const pkcs12Passphrase = "test pkcs12 passphrase";
  openssl(dir, [
    "pkcs12",
    "-export",
    "-in",
    "leaf.pem",
    "-inkey",
    "leaf.key",
    "-certfile",
    "ca.pem",
    "-out",
    "leaf.p12",
    "-passout",
    `pass:${pkcs12Passphrase}`,
  ]);
  return {
    caFile: join(dir, "ca.pem"),
    otherCaFile: join(dir, "other-ca.pem"),
    certFile: join(dir, "leaf.pem"),
    keyFile: join(dir, "leaf.key"),
    pkcs12File: join(dir, "leaf.p12"),
    pkcs12Passphrase,
  };
}

/** `osslsigncode verify` of a signed file, trusting only `caFile`. */
export function osslsigncodeVerify(file: string, caFile: string): { ok: boolean; output: string } {
  const r = spawnSync("osslsigncode", ["verify", "-CAfile", caFile, "-in", file], {
    encoding: "utf8",
    env: { ...process.env, LC_ALL: "C" },
  });
  if (r.error) throw r.error;
  const output = r.stdout + r.stderr;
  return { ok: r.status === 0 && output.includes("Signature verification: ok"), output };
}

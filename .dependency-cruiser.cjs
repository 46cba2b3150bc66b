/**
 * The layers of DESIGN.md §2, checked by `npm run lint` (dependency-cruiser): leaf utilities ←
 * store ← domain ← edges ← bin, no cycles (of files, and of folders: the domain folders are
 * ordered keys ← signing and tokens ← recovery), src/ and monitor/ self-contained, bench/ and
 * scripts/ never reaching into test/. A wrong-way import fails the lint with the rule's name and comment.
 */
const LEAF = "^src/(files|log|metrics|net|config|process)/|^src/(version|errors)\\.ts$";
const STORE = "^src/store/";
const DOMAIN = "^src/(tokens|signing|keys|recovery)/";
const EDGE = "^src/(http|client|admin)/|^src/node\\.ts$";

module.exports = {
  forbidden: [
    {
      name: "no-cycles",
      comment: "folders depend one way only",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "src-self-contained",
      comment: "src/ is the product: it never imports the monitor, benchmarks, rigs or tests",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(monitor|bench|scripts|test)/" },
    },
    {
      name: "monitor-self-contained",
      comment: "the monitor ships with the product: it never imports benchmarks, rigs or tests",
      severity: "error",
      from: { path: "^monitor/" },
      to: { path: "^(bench|scripts|test)/" },
    },
    {
      name: "no-tests-in-rigs",
      comment: "benchmarks and rigs share scripts/, never test/",
      severity: "error",
      from: { path: "^(bench|scripts)/" },
      to: { path: "^test/" },
    },
    {
      name: "leaf-imports-leaf",
      comment: "files, log, metrics, net, config: utilities that know no domain",
      severity: "error",
      from: { path: LEAF },
      to: { path: "^src/", pathNot: LEAF },
    },
    {
      name: "store-imports-leaf",
      comment: "store is Redis access: it imports no domain folder",
      severity: "error",
      from: { path: STORE },
      to: { path: "^src/", pathNot: `${LEAF}|${STORE}` },
    },
    {
      name: "domain-imports-down",
      comment: "tokens, signing, keys, recovery use the store and the leaves, never an edge",
      severity: "error",
      from: { path: DOMAIN },
      to: { path: `${EDGE}|^src/bin/` },
    },
    {
      name: "keys-below-signing",
      comment: "keys sign raw bytes for the formats: it knows no other domain folder",
      severity: "error",
      from: { path: "^src/keys/" },
      to: { path: "^src/(tokens|signing|recovery)/" },
    },
    {
      name: "tokens-apart-from-signing",
      comment: "tokens and recovery (which restores them) never reach into signing or keys",
      severity: "error",
      from: { path: "^src/(tokens|recovery)/" },
      to: { path: "^src/(signing|keys)/" },
    },
    {
      name: "tokens-below-recovery",
      comment: "recovery restores tokens: tokens never imports recovery",
      severity: "error",
      from: { path: "^src/tokens/" },
      to: { path: "^src/recovery/" },
    },
    {
      name: "edges-apart",
      comment: "http, client and admin are separate edges: what they share lives below them",
      severity: "error",
      from: { path: "^src/(http|client|admin)/" },
      to: { path: "^src/(http|client|admin)/|^src/node\\.ts$", pathNot: "^src/$1/" },
    },
    {
      name: "monitor-not-on-edges",
      comment: "the monitor is an edge of its own: it uses the domain and the store, not src's edges",
      severity: "error",
      from: { path: "^monitor/" },
      to: { path: `${EDGE}|^src/bin/` },
    },
    {
      name: "bin-is-the-top",
      comment: "only the entry points (and tests of them) import src/bin",
      severity: "error",
      from: { pathNot: "^(src/bin/|test/)" },
      to: { path: "^src/bin/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|dist)/" },
    tsConfig: { fileName: "tsconfig.json" },
    tsPreCompilationDeps: true,
  },
};

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import {
  allPanels,
  annotations,
  type Json,
  type Panel,
  queries,
  readDashboards,
  substitute,
  variables,
} from "../helpers/dashboards.js";
import { exportedMetricNames, metricsInQuery } from "../helpers/exported-metrics.js";

/**
 * The Grafana dashboards and their provisioning (grafana/): well-formed, pointing at the
 * provisioned datasource, and every query valid PromQL (promtool) over exported metrics only.
 */

const ROOT = new URL("../../../", import.meta.url);
const DATASOURCES_YML = new URL("grafana/provisioning/datasources/prometheus.yml", ROOT);
const PROVIDER_YML = new URL("grafana/provisioning/dashboards/signing.yml", ROOT);

/** The hand-chosen dashboard uids, by file: links and bookmarks depend on them. */
const EXPECTED_UIDS: Record<string, string> = {
  "signing-cluster.json": "signing-cluster-overview",
  "signing-monitor.json": "signing-monitor",
};

function datasourceUid(): string {
  const doc = parseYaml(readFileSync(DATASOURCES_YML, "utf8")) as { datasources?: Json[] };
  const ds = doc.datasources?.[0];
  assert.ok(ds, "the datasource yml defines no datasource");
  assert.equal(typeof ds.uid, "string");
  return ds.uid as string;
}

const dashboards = readDashboards();

describe("grafana provisioning", () => {
  test("the datasource yml defines exactly one Prometheus datasource with a fixed uid", () => {
    const doc = parseYaml(readFileSync(DATASOURCES_YML, "utf8")) as { datasources?: Json[] };
    assert.ok(Array.isArray(doc.datasources), "datasources: must be a list");
    assert.equal(doc.datasources.length, 1, "exactly one datasource");
    const [ds] = doc.datasources;
    assert.equal(ds?.type, "prometheus");
    assert.equal(ds?.name, "Prometheus");
    assert.equal(ds?.uid, "signing-prometheus");
    assert.match(String(ds?.url), /^https?:\/\//);
  });

  test("the dashboard provider is a file provider pointing at a path", () => {
    const doc = parseYaml(readFileSync(PROVIDER_YML, "utf8")) as {
      providers?: { type?: unknown; options?: { path?: unknown } }[];
    };
    assert.ok(
      Array.isArray(doc.providers) && doc.providers.length > 0,
      "providers: must be a non-empty list",
    );
    for (const p of doc.providers) {
      assert.equal(p.type, "file");
      assert.equal(typeof p.options?.path, "string");
      assert.match(p.options?.path as string, /^\/\S+/, "options.path must be an absolute path");
    }
  });
});

describe("grafana dashboards", () => {
  const dsUid = datasourceUid();

  test("every expected dashboard is there, with its hand-chosen uid, and uids are unique", () => {
    assert.deepEqual(dashboards.map((d) => d.file).sort(), Object.keys(EXPECTED_UIDS).sort());
    const seen = new Set<string>();
    for (const d of dashboards) {
      const uid = d.json.uid as string;
      assert.equal(uid, EXPECTED_UIDS[d.file], `${d.file}: uid`);
      assert.ok(!seen.has(uid), `${d.file}: uid ${uid} used twice`);
      seen.add(uid);
    }
  });

  for (const d of dashboards) {
    describe(d.file, () => {
      test("is a provisionable dashboard model", () => {
        assert.equal(typeof d.json.title, "string", "title");
        assert.ok((d.json.title as string).length > 0, "title");
        assert.equal(typeof d.json.uid, "string", "uid");
        assert.ok(Array.isArray(d.json.panels) && d.json.panels.length > 0, "panels");
        assert.equal(typeof d.json.schemaVersion, "number", "schemaVersion");
        assert.equal(d.json.id, null, "id must be null for provisioning");
        assert.ok(!d.raw.includes(`\${DS_`), `no \${DS_…} datasource placeholders`);
        assert.ok(!("__inputs" in d.json), "no __inputs (that is the export-for-sharing format)");
      });

      test("panel ids are unique", () => {
        const ids = allPanels(d.json.panels as Panel[]).map((p) => p.id);
        for (const id of ids) assert.equal(typeof id, "number", `panel id ${String(id)}`);
        const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
        assert.deepEqual(dupes, [], "duplicate panel ids");
      });

      test("every panel, target, query variable and annotation uses the provisioned datasource", () => {
        const wrong: string[] = [];
        const check = (what: string, ds: { type?: unknown; uid?: unknown } | undefined) => {
          if (ds?.uid !== dsUid || ds?.type !== "prometheus") wrong.push(`${what}: ${JSON.stringify(ds)}`);
        };
        for (const p of allPanels(d.json.panels as Panel[])) {
          check(`panel "${p.title}"`, p.datasource);
          for (const t of p.targets ?? []) check(`panel "${p.title}" target ${t.refId}`, t.datasource);
        }
        for (const v of variables(d)) if (v.type === "query") check(`variable ${v.name}`, v.datasource);
        for (const a of annotations(d)) check(`annotation "${a.name}"`, a.datasource);
        assert.deepEqual(wrong, [], `datasource uid must be ${dsUid}`);
      });

      test('has a multi-value `node` variable, used by the panels as instance=~"$node"', () => {
        const node = variables(d).find((v) => v.name === "node");
        assert.ok(node, "variable node");
        assert.equal(node.type, "query");
        assert.equal(node.query, "label_values(signing_http_request_duration_seconds_count, instance)");
        assert.equal((node as unknown as Json).multi, true);
        assert.equal((node as unknown as Json).includeAll, true);
        assert.ok(
          queries(d).some((q) => q.expr.includes('instance=~"$node"')),
          'no query filters on instance=~"$node"',
        );
      });

      test("every query names only exported metrics", async () => {
        const exported = await exportedMetricNames();
        const unknown: string[] = [];
        for (const q of queries(d)) {
          for (const m of metricsInQuery(substitute(d, q.expr)))
            if (!exported.has(m)) unknown.push(`${q.where}: ${m}`);
        }
        for (const v of variables(d)) {
          if (v.type !== "query") continue;
          const m = /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(String(v.query));
          if (m?.[1] && !exported.has(m[1])) unknown.push(`variable ${v.name}: ${m[1]}`);
        }
        assert.deepEqual(unknown, [], "metrics not exported by the nodes or the monitor");
      });
    });
  }

  describe("every query parses (promtool check rules)", () => {
    const dir = mkdtempSync(join(tmpdir(), "dashboards-"));
    after(() => rmSync(dir, { recursive: true, force: true }));

    test("promtool accepts all dashboard expressions as recording rules", () => {
      const all = dashboards.flatMap((d) => queries(d).map((q) => ({ ...q, expr: substitute(d, q.expr) })));
      assert.ok(all.length > 0, "no queries found");
      const unresolved = all.filter((q) => q.expr.includes("$"));
      assert.deepEqual(
        unresolved.map((q) => `${q.where}: ${q.expr}`),
        [],
        "unresolved $variables (not a dashboard variable?)",
      );
      const rules = all.map((q, i) => ({ record: `dashboard:q${i}`, expr: q.expr }));
      const file = join(dir, "dashboards.rules.yml");
      writeFileSync(file, stringifyYaml({ groups: [{ name: "dashboards", rules }] }));

      const res = spawnSync("promtool", ["check", "rules", file], { encoding: "utf8" });
      if (res.error) {
        assert.fail(
          `cannot run promtool (${res.error.message}): install Prometheus' promtool on PATH; this check never skips`,
        );
      }
      const index = all.map((q, i) => `  dashboard:q${i}  ${q.where}`).join("\n");
      assert.equal(
        res.status,
        0,
        `promtool check rules failed (exit ${res.status}):\n${res.stdout}${res.stderr}\nrules:\n${index}`,
      );
    });
  });
});

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { SEVERITY } from "../../monitor/alerts.js";
import { monitorConfigSchema } from "../../monitor/config.js";
import { REJECTED_TOKEN_RESULTS } from "../../src/tokens/service.js";
import { exportedMetricNames, metricsInQuery } from "../helpers/exported-metrics.js";

const root = new URL("../../../", import.meta.url).pathname;
const promDir = join(root, "prometheus");

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  keep_firing_for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules: Rule[] = (
  parse(readFileSync(join(promDir, "alerts.yml"), "utf8")) as { groups: { rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);

interface AlertmanagerRoute {
  matchers?: string[];
  group_wait?: string;
  group_interval?: string;
  routes?: AlertmanagerRoute[];
}
interface AlertmanagerConfig {
  route: AlertmanagerRoute & { group_wait: string; group_interval: string };
}

/** A Prometheus duration of the forms the config files use (1m, 30s, 1m30s, 4h) in seconds. */
function seconds(duration: string): number {
  const units: Record<string, number> = { h: 3600, m: 60, s: 1 };
  const parts = [...duration.matchAll(/(\d+)([hms])/g)];
  assert.equal(parts.map((p) => p[0]).join(""), duration, `a duration: ${duration}`);
  return parts.reduce((sum, p) => sum + Number(p[1]) * (units[p[2] as string] as number), 0);
}

/** Prometheus' evaluation interval as prometheus.yml ships it. */
function evaluationInterval(): string {
  return (
    parse(readFileSync(join(promDir, "prometheus.yml"), "utf8")) as {
      global: { evaluation_interval: string };
    }
  ).global.evaluation_interval;
}

/** promtool must be there: CI installs it (Debian's prometheus package); this never skips. */
function promtool(args: string[]): { status: number | null; output: string } {
  const r = spawnSync("promtool", args, { cwd: promDir, encoding: "utf8" });
  if (r.error) throw new Error(`cannot run promtool (${r.error.message}): install the prometheus package`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe("prometheus/alerts.yml", () => {
  test("promtool check rules, check config and test rules pass", () => {
    for (const args of [
      ["check", "rules", "alerts.yml"],
      ["check", "config", "prometheus.yml"],
      ["test", "rules", "alerts.test.yml"],
    ]) {
      const r = promtool(args);
      assert.equal(r.status, 0, `promtool ${args.join(" ")}:\n${r.output}`);
    }
  });

  test("every rule has for, severity, summary, description and its runbook", () => {
    const names = new Set<string>();
    for (const r of rules) {
      assert.ok(!names.has(r.alert), `one rule per alert name: ${r.alert}`);
      names.add(r.alert);
      assert.ok(r.for !== undefined, `${r.alert}: for:`);
      assert.ok(["page", "ticket"].includes(r.labels?.severity ?? ""), `${r.alert}: severity`);
      assert.ok(r.annotations?.summary && r.annotations.description, `${r.alert}: summary and description`);
      assert.equal(r.annotations?.runbook_url, `runbooks/${r.alert}.md`);
      assert.ok(existsSync(join(root, "runbooks", `${r.alert}.md`)), `runbooks/${r.alert}.md exists`);
    }
    for (const name of [
      "InvalidTokenSpike",
      "RedisRestartedWithDataLoss",
      "RedisUnreachable",
      "StoreBreakerOpen",
      "SigningNodeDown",
      "SigningErrorRateHigh",
      "SigningLatencyHigh",
      "MonitorDown",
      "SnapshotStale",
      "DegradedTokenChecks",
      "SigningKeyBackendFailing",
    ]) {
      assert.ok(names.has(name), `DESIGN.md §9 alert ${name}`);
    }
  });

  test("every runbook belongs to an alert (a rule or one the monitor sends)", () => {
    const alerts = new Set([...rules.map((r) => r.alert), ...Object.keys(SEVERITY)]);
    for (const f of readdirSync(join(root, "runbooks")).filter(
      (f) => f.endsWith(".md") && f !== "README.md",
    )) {
      assert.ok(alerts.has(f.replace(/\.md$/, "")), `runbooks/${f} has no alert`);
    }
    for (const name of Object.keys(SEVERITY))
      assert.ok(existsSync(join(root, "runbooks", `${name}.md`)), `monitor alert ${name}`);
  });

  test("every alert has a case where it fires and one where it stays quiet", () => {
    const cases = (
      parse(readFileSync(join(promDir, "alerts.test.yml"), "utf8")) as {
        tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
      }
    ).tests.flatMap((t) => t.alert_rule_test);
    for (const r of rules) {
      assert.ok(
        cases.some((c) => c.alertname === r.alert && c.exp_alerts.length > 0),
        `${r.alert} fires in a case`,
      );
      assert.ok(
        cases.some((c) => c.alertname === r.alert && c.exp_alerts.length === 0),
        `${r.alert} stays quiet in a case`,
      );
    }
  });

  test("the promtool cases run at the intervals prometheus.yml ships, which the rules are designed for", () => {
    const global = (
      parse(readFileSync(join(promDir, "prometheus.yml"), "utf8")) as {
        global: { scrape_interval: string; evaluation_interval: string };
      }
    ).global;
    const cases = parse(readFileSync(join(promDir, "alerts.test.yml"), "utf8")) as {
      evaluation_interval: string;
      tests: { name: string; interval: string }[];
    };
    assert.equal(cases.evaluation_interval, global.evaluation_interval);
    // The cases that time a page (or its absence) for the fast-paging rules scrape as shipped;
    // at a longer interval their 1m windows would hold too few samples to mean anything.
    const timed = [
      "InvalidTokenSpike",
      "StoreBreakerOpen",
      "RedisUnreachable",
      "DegradedTokenChecks",
      "MonitorDown",
      "SigningNodeDown",
      "MostSigningNodesDown",
      "SigningKeyBackendFailing",
    ];
    for (const c of cases.tests.filter((c) => timed.some((a) => c.name.startsWith(a))))
      assert.equal(c.interval, global.scrape_interval, c.name);
  });

  test("every page keeps firing longer than the pager routes of alertmanager.yml wait between notifications", () => {
    const am = parse(readFileSync(join(promDir, "alertmanager.yml"), "utf8")) as AlertmanagerConfig;
    const pagerRoutes = (am.route.routes ?? []).filter((r) => r.matchers?.includes('severity="page"'));
    assert.ok(pagerRoutes.length > 0, "alertmanager.yml routes pages");
    for (const route of pagerRoutes) {
      // A page that fires and resolves between two notifications of its group reaches nobody:
      // the first comes group_wait after a new group's first alert, the next at group_interval.
      const wait = seconds(route.group_wait ?? am.route.group_wait);
      const interval = seconds(route.group_interval ?? am.route.group_interval);
      for (const r of rules.filter((r) => r.labels?.severity === "page")) {
        const keep = seconds(r.keep_firing_for ?? "0s");
        assert.ok(
          keep >= Math.max(wait, interval),
          `${r.alert}: keep_firing_for ${keep}s < ${wait}s / ${interval}s`,
        );
      }
      // The monitor's own alerts are held as long, plus one evaluation interval, by default.
      const held = monitorConfigSchema.shape.alerts.parse(undefined).minFiringSeconds;
      assert.ok(
        held >= Math.max(wait, interval) + seconds(evaluationInterval()),
        `alerts.minFiringSeconds ${held}s < max(${wait}s, ${interval}s) + one evaluation interval`,
      );
    }
  });

  test("every expression uses only metrics that nodes and monitor export", async () => {
    const exported = await exportedMetricNames();
    for (const r of rules) {
      for (const m of metricsInQuery(r.expr))
        assert.ok(exported.has(m), `${r.alert} uses ${m}, which nothing exports`);
    }
  });
});

/**
 * DESIGN.md §9: an alert name has one meaning everywhere. The rules' lists of rejected results
 * are regexes that Prometheus needs spelled out, so they are checked against the code's list;
 * InvalidTokenSpike's thresholds are checked against the monitor's defaults for the same alert.
 */
describe("the invalid-token rules and the code agree", () => {
  const rule = (name: string): Rule => {
    const r = rules.find((x) => x.alert === name);
    assert.ok(r, `rule ${name}`);
    return r;
  };
  const checks = "sum\\(rate\\(signing_token_checks_total\\[\\w+\\]\\)\\)\\s*>\\s*([0-9.]+)";
  /** The `> x` of every `rejected / all` term, and of the `and all > x` minimum rate. */
  const thresholds = (expr: string) => ({
    ratios: [...expr.matchAll(new RegExp(`/\\s*${checks}`, "g"))].map((m) => Number(m[1])),
    minimums: [...expr.matchAll(new RegExp(`\\band\\s+${checks}`, "g"))].map((m) => Number(m[1])),
  });

  for (const name of ["InvalidTokenSpike", "InvalidTokenSlowBurn"]) {
    test(`${name}: every result=~ list is exactly REJECTED_TOKEN_RESULTS`, () => {
      const { expr } = rule(name);
      const lists = [...expr.matchAll(/result\s*=~\s*"([^"]*)"/g)].map((m) => (m[1] as string).split("|"));
      assert.equal(lists.length, thresholds(expr).ratios.length, "one list per rejected / all term");
      assert.ok(lists.length > 0);
      for (const list of lists) {
        assert.equal(new Set(list).size, list.length, `no result twice in ${list.join("|")}`);
        assert.deepEqual(new Set(list), new Set(REJECTED_TOKEN_RESULTS));
      }
      // Any other way of picking results would escape the comparison above.
      assert.doesNotMatch(expr.replace(/result\s*=~\s*"[^"]*"/g, ""), /result/);
    });
  }

  test("InvalidTokenSpike: the rule's ratio and minimum check rate are the monitor's defaults", () => {
    const { expr, annotations } = rule("InvalidTokenSpike");
    const { ratios, minimums } = thresholds(expr);
    assert.equal(ratios.length, 2, "a long and a short window");
    assert.equal(minimums.length, 1, "one minimum rate of all checks");
    // The defaults, as a config without a spike section and one with an empty one get them.
    const shape = monitorConfigSchema.shape.spike;
    for (const defaults of [shape.parse(undefined), shape.parse({})]) {
      for (const ratio of ratios) assert.equal(ratio, defaults.ratio, "rule ratio = spike.ratio");
      assert.equal(minimums[0], defaults.minChecksPerSecond, "rule minimum = spike.minChecksPerSecond");
      const percent = Math.round(defaults.ratio * 1000) / 10;
      assert.match(annotations?.summary ?? "", new RegExp(`\\b${percent}%`), "the summary names the ratio");
    }
  });
});

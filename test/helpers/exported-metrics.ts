import { MonitorMetrics } from "../../monitor/metrics.js";
import { NodeMetrics } from "../../src/metrics/node-metrics.js";

/**
 * Every series name the nodes and the monitor export, histogram series included: what
 * dashboards, alert rules and runbooks may query.
 */
export async function exportedMetricNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const registry of [new NodeMetrics().registry, new MonitorMetrics().registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === "histogram")
        for (const s of ["_bucket", "_sum", "_count"]) names.add(`${m.name}${s}`);
      if (String(m.type) === "summary") for (const s of ["_sum", "_count"]) names.add(`${m.name}${s}`);
    }
  }
  // Prometheus' own series for every scrape target.
  for (const n of ["up", "scrape_duration_seconds", "scrape_samples_scraped"]) names.add(n);
  return names;
}

/** PromQL aggregations, functions and keywords: words in a query that are not metric names. */
const PROMQL_WORDS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "count",
  "stddev",
  "stdvar",
  "topk",
  "bottomk",
  "quantile",
  "count_values",
  "group",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "rate",
  "irate",
  "increase",
  "delta",
  "idelta",
  "deriv",
  "changes",
  "resets",
  "histogram_quantile",
  "abs",
  "absent",
  "absent_over_time",
  "ceil",
  "floor",
  "round",
  "clamp",
  "clamp_min",
  "clamp_max",
  "exp",
  "ln",
  "log2",
  "log10",
  "sqrt",
  "time",
  "timestamp",
  "vector",
  "scalar",
  "sort",
  "sort_desc",
  "label_replace",
  "label_join",
  "avg_over_time",
  "min_over_time",
  "max_over_time",
  "sum_over_time",
  "count_over_time",
  "last_over_time",
  "present_over_time",
  "quantile_over_time",
  "predict_linear",
  "day_of_week",
  "hour",
]);

/** Metric names used in a PromQL expression (identifiers that are not functions or keywords). */
export function metricsInQuery(expr: string): string[] {
  const withoutStrings = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "{}")
    .replace(/\[[^\]]*\]/g, "[]")
    // Label lists of grouping and matching clauses, and offset durations, name no metrics.
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\boffset\s+-?[0-9a-z]+/g, " ");
  const words = withoutStrings.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return [...new Set(words.filter((w) => !PROMQL_WORDS.has(w) && !/^(e|inf|nan)$/i.test(w)))];
}

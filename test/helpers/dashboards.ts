import { readdirSync, readFileSync } from "node:fs";

/** The Grafana dashboards in grafana/dashboards: their queries, as Prometheus would get them. */

const ROOT = new URL("../../../", import.meta.url);
const DASHBOARDS_DIR = new URL("grafana/dashboards/", ROOT);

// Grafana's built-in interval variables, replaced by a plain duration for promtool.
const BUILTINS: Record<string, string> = {
  __rate_interval: "5m",
  __interval: "5m",
  __range: "5m",
};

export type Json = Record<string, unknown>;

export interface Panel {
  id?: unknown;
  type?: unknown;
  title?: unknown;
  datasource?: { type?: unknown; uid?: unknown };
  targets?: { refId?: unknown; expr?: unknown; datasource?: { type?: unknown; uid?: unknown } }[];
  panels?: Panel[];
}

export interface Variable {
  name: string;
  type: string;
  query?: unknown;
  definition?: unknown;
  current?: { value?: unknown };
  datasource?: { type?: unknown; uid?: unknown };
}

export interface Annotation {
  name?: unknown;
  expr?: unknown;
  target?: { expr?: unknown };
  datasource?: { type?: unknown; uid?: unknown };
}

export interface Dashboard {
  file: string;
  raw: string;
  json: Json;
}

export interface Query {
  where: string;
  expr: string;
}

export function readDashboards(): Dashboard[] {
  const files = readdirSync(DASHBOARDS_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort();
  return files.map((file) => {
    const raw = readFileSync(new URL(file, DASHBOARDS_DIR), "utf8");
    let json: Json;
    try {
      json = JSON.parse(raw) as Json;
    } catch (err) {
      throw new Error(`grafana/dashboards/${file} is not valid JSON: ${(err as Error).message}`);
    }
    return { file, raw, json };
  });
}

/** Every panel, rows' nested panels included. */
export function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

export function variables(d: Dashboard): Variable[] {
  return ((d.json.templating as { list?: Variable[] } | undefined)?.list ?? []) as Variable[];
}

export function annotations(d: Dashboard): Annotation[] {
  return ((d.json.annotations as { list?: Annotation[] } | undefined)?.list ?? []) as Annotation[];
}

/** Every PromQL expression in a dashboard: panel targets and annotations. */
export function queries(d: Dashboard): Query[] {
  const out: Query[] = [];
  for (const p of allPanels(d.json.panels as Panel[])) {
    for (const t of p.targets ?? []) {
      if (typeof t.expr === "string")
        out.push({ where: `${d.file} panel "${p.title}" ${t.refId}`, expr: t.expr });
    }
  }
  for (const a of annotations(d)) {
    const expr = a.expr ?? a.target?.expr;
    if (typeof expr === "string") out.push({ where: `${d.file} annotation "${a.name}"`, expr });
  }
  return out;
}

/**
 * The expression as Prometheus would get it: Grafana's interval variables become 5m, query
 * variables (instances) match anything, textbox/constant/custom ones take their value.
 */
export function substitute(d: Dashboard, expr: string): string {
  const values = new Map<string, string>(Object.entries(BUILTINS));
  for (const v of variables(d)) {
    if (v.type === "query") values.set(v.name, ".*");
    else {
      const current = v.current?.value;
      values.set(v.name, String(typeof current === "string" ? current : (v.query ?? "")));
    }
  }
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (whole, a, b, c) => {
    const name = (a ?? b ?? c) as string;
    return values.get(name) ?? whole;
  });
}

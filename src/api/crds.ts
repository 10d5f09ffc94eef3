import { z } from "zod";
import { type KindDef, STORED_KINDS, specJsonSchema } from "./kinds.js";
import { GROUP, VERSION } from "./meta.js";

type Schema = Record<string, unknown>;

/**
 * Turns the JSON Schema zod emits into a Kubernetes structural schema: every node typed, no
 * `additionalProperties: false` (the API server prunes unknown fields instead, and kubectl's
 * strict field validation rejects them), int-or-string for quantities, no JSON-Schema-only
 * keywords. Descriptions are kept, so `kubectl explain` shows them.
 */
export function toStructural(node: Schema): Schema {
  const out: Schema = {};
  const type = node.type;
  if (Array.isArray(type)) {
    const types = [...type].sort().join(",");
    if (types === "integer,string" || types === "number,string") out["x-kubernetes-int-or-string"] = true;
    else out["x-kubernetes-preserve-unknown-fields"] = true;
  } else if (node.anyOf && Array.isArray(node.anyOf)) {
    const types = (node.anyOf as Schema[])
      .map((s) => s.type)
      .sort()
      .join(",");
    if (types === "integer,string" || types === "number,string") out["x-kubernetes-int-or-string"] = true;
    else out["x-kubernetes-preserve-unknown-fields"] = true;
  } else if (Array.isArray(node.oneOf)) {
    // A discriminated union (earlyStopping: median | asha): one object with every branch's
    // fields; the server validates which combination is allowed.
    const branches = node.oneOf as Schema[];
    if (branches.every((b) => b.type === "object")) {
      const merged: Schema = { type: "object", properties: {} };
      // Only types and descriptions: a default or bound of one branch must not apply to another.
      for (const b of branches)
        for (const [k, v] of Object.entries((b.properties ?? {}) as Record<string, Schema>)) {
          const { default: _d, minimum: _min, maximum: _max, ...loose } = v;
          (merged.properties as Schema)[k] = loose;
        }
      const required = branches
        .map((b) => (b.required as string[] | undefined) ?? [])
        .reduce((a, b) => a.filter((k) => b.includes(k)));
      if (required.length) merged.required = required;
      Object.assign(out, toStructural(merged));
    } else out["x-kubernetes-preserve-unknown-fields"] = true;
  } else if (typeof type === "string") out.type = type;
  for (const key of [
    "description",
    "default",
    "minimum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
  ]) {
    if (node[key] !== undefined) out[key] = node[key];
  }
  if (node.maximum !== undefined && (node.maximum as number) < Number.MAX_SAFE_INTEGER)
    out.maximum = node.maximum;
  if (node.properties) {
    out.properties = Object.fromEntries(
      Object.entries(node.properties as Record<string, Schema>).map(([k, v]) => [k, toStructural(v)]),
    );
  }
  if (Array.isArray(node.required) && node.required.length > 0) out.required = node.required;
  if (node.items && typeof node.items === "object") out.items = toStructural(node.items as Schema);
  if (node.additionalProperties && typeof node.additionalProperties === "object") {
    out.additionalProperties = toStructural(node.additionalProperties as Schema);
  }
  if (out.type === "object" && !out.properties && !out.additionalProperties)
    out["x-kubernetes-preserve-unknown-fields"] = true;
  return out;
}

function printerColumns(def: KindDef): Schema[] {
  const cols: Schema[] = def.columns
    .filter((c) => !c.path.includes("["))
    .map((c) => ({
      name: c.name[0] + c.name.slice(1).toLowerCase(),
      type: c.type ?? "string",
      jsonPath: `.${c.path}`,
      ...(c.wide ? { priority: 1 } : {}),
    }));
  cols.push({ name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" });
  return cols;
}

/** The CustomResourceDefinition of one kind, from the same zod schema that validates embedded. */
export function crdFor(def: KindDef): Schema {
  const spec = toStructural(specJsonSchema(def));
  const statusDescription = (z.toJSONSchema(def.status, { io: "output", unrepresentable: "any" }) as Schema)
    .description;
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${def.plural}.${GROUP}`, labels: { "app.kubernetes.io/part-of": "loom" } },
    spec: {
      group: GROUP,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: def.shortNames,
        categories: ["loom"],
      },
      scope: def.namespaced ? "Namespaced" : "Cluster",
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: printerColumns(def),
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: (spec.description as string | undefined) ?? def.kind,
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec,
                status: {
                  type: "object",
                  description:
                    (statusDescription as string | undefined) ??
                    "Observed state, written by Loom's controllers.",
                  "x-kubernetes-preserve-unknown-fields": true,
                },
              },
            },
          },
        },
      ],
    },
  };
}

/** Every Loom CRD, in a stable order. */
export function allCrds(): Schema[] {
  return STORED_KINDS.map(crdFor);
}

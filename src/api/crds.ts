import { z } from "zod";
import { type CrdRule, RULES_BY_MESSAGE, RULES_BY_SCHEMA, workersPolicyRules } from "./crdrules.js";
import { type KindDef, STORED_KINDS, SWEEP, TRAININGJOB } from "./kinds.js";
import { GROUP, VERSION } from "./meta.js";

type Schema = Record<string, unknown>;

/** Where the zod refinements' CRD rules ride on the JSON Schema until toStructural applies them. */
const RULES = "x-loom-rules";

/** The messages of a zod schema's own refinements (and a union's error), for RULES_BY_MESSAGE. */
export function refinementMessages(schema: unknown): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: zod's internals (def.checks) are untyped here
  const def = (schema as any)._zod.def;
  const out: string[] = [];
  for (const check of def.checks ?? []) {
    const d = check._zod.def;
    if (d.check !== "custom") continue;
    const msg = typeof d.error === "function" ? d.error() : undefined;
    if (typeof msg === "string") out.push(msg);
  }
  if (def.type === "union" && typeof def.error === "function") {
    const msg = def.error();
    if (typeof msg === "string") out.push(msg);
  }
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: zod's internals (def.checks) are untyped here
const checksOf = (s: unknown): unknown[] => (s as any)._zod.def.checks ?? [];

/**
 * RULES_BY_SCHEMA's rules for a schema or a copy of it (`.describe()` copies a schema; the copy
 * shares its checks, so a Sweep's template gets the TrainingJob spec's rules).
 */
export function rulesBySchema(schema: unknown): CrdRule[] {
  const own = checksOf(schema);
  return [...RULES_BY_SCHEMA].flatMap(([registered, rule]) => {
    const checks = checksOf(registered);
    return checks.length && checks.every((c) => own.includes(c)) ? [rule] : [];
  });
}

/** JSON Schema of a spec with each refinement's CRD rule attached where zod put it. */
export function specSchemaWithRules(spec: z.ZodType): Schema {
  return z.toJSONSchema(spec, {
    io: "input",
    unrepresentable: "any",
    override: (ctx) => {
      const rules: CrdRule[] = refinementMessages(ctx.zodSchema)
        .map((m) => RULES_BY_MESSAGE[m])
        .filter((r): r is CrdRule => r !== undefined);
      rules.push(...rulesBySchema(ctx.zodSchema));
      if (rules.length) {
        const js = ctx.jsonSchema as Schema;
        js[RULES] = [...((js[RULES] as CrdRule[] | undefined) ?? []), ...rules];
      }
    },
  }) as Schema;
}

const SCALARS = ["string", "number", "integer", "boolean"];

/** The branches of a union node: anyOf/oneOf, or a type list such as ["string", "number"]. */
function branchesOf(node: Schema): Schema[] | undefined {
  if (Array.isArray(node.type)) return (node.type as string[]).map((type) => ({ type }));
  if (Array.isArray(node.anyOf)) return node.anyOf as Schema[];
  if (Array.isArray(node.oneOf)) return node.oneOf as Schema[];
  return undefined;
}

/**
 * One branch of a union as a value validation without `type` (a structural schema may not type
 * inside anyOf): contradictory bounds rule out every other JSON type (minLength 1 with maxLength
 * 0 fails only strings, and so on), then the branch's own bounds apply.
 */
function branchGuard(b: Schema): Schema {
  const t = b.type as string;
  const g: Schema = {};
  if (t !== "string") Object.assign(g, { minLength: 1, maxLength: 0 });
  if (t !== "number" && t !== "integer") Object.assign(g, { minimum: 1, maximum: 0 });
  if (t !== "array") Object.assign(g, { minItems: 1, maxItems: 0 });
  if (t !== "object") Object.assign(g, { minProperties: 1, maxProperties: 0 });
  if (t !== "boolean") g.not = { enum: [true, false] };
  if (t === "integer") g.multipleOf = 1;
  if (b.const !== undefined) g.enum = [b.const];
  for (const k of ["minimum", "maximum", "pattern", "minLength", "maxLength", "enum"])
    if (b[k] !== undefined && Math.abs(Number(b[k])) !== Number.MAX_SAFE_INTEGER) g[k] = b[k];
  if (t === "object") {
    if (Array.isArray(b.required) && b.required.length) g.required = b.required;
    if (b.additionalProperties === false && b.properties)
      g.maxProperties = Object.keys(b.properties as Schema).length;
  }
  return g;
}

/** Objects' properties merged (types and descriptions only: one branch's bounds are not another's). */
function mergeObjects(branches: Schema[], keepRequired: boolean): Schema {
  const merged: Schema = { type: "object", properties: {} };
  for (const b of branches)
    for (const [k, v] of Object.entries((b.properties ?? {}) as Record<string, Schema>)) {
      const { default: _d, minimum: _min, maximum: _max, const: c, ...loose } = v;
      const props = merged.properties as Record<string, Schema>;
      // A discriminator: its values across branches become an enum.
      if (c !== undefined) {
        const prev = (props[k]?.enum as unknown[] | undefined) ?? [];
        props[k] = { ...loose, enum: [...prev, c] };
      } else props[k] = { ...props[k], ...loose };
    }
  if (keepRequired) {
    const required = branches
      .map((b) => (b.required as string[] | undefined) ?? [])
      .reduce((a, b) => a.filter((k) => b.includes(k)));
    if (required.length) merged.required = required;
  }
  return merged;
}

/**
 * A discriminated union (earlyStopping: median | asha) as one object, with CEL per branch: the
 * fields a branch lacks, requires or bounds, when the discriminator names that branch.
 */
function discriminated(branches: Schema[], key: string): { merged: Schema; rules: Schema[] } {
  const merged = mergeObjects(branches, true);
  const all = new Set(branches.flatMap((b) => Object.keys((b.properties ?? {}) as Schema)));
  const rules: Schema[] = [];
  for (const b of branches) {
    const props = (b.properties ?? {}) as Record<string, Schema>;
    const when = `self.${key} != '${(props[key] as Schema).const}' || `;
    const name = `rule ${(props[key] as Schema).const}`;
    for (const k of all)
      if (!(k in props)) rules.push({ rule: `${when}!has(self.${k})`, message: `${name} has no ${k}` });
    for (const k of (b.required as string[] | undefined) ?? [])
      if (k !== key) rules.push({ rule: `${when}has(self.${k})`, message: `${name} needs ${k}` });
    for (const [k, v] of Object.entries(props)) {
      if (typeof v.minimum === "number" && v.minimum > -Number.MAX_SAFE_INTEGER)
        rules.push({
          rule: `${when}!has(self.${k}) || self.${k} >= ${v.minimum}`,
          message: `${k} must be at least ${v.minimum} for ${name}`,
          fieldPath: `.${k}`,
        });
    }
  }
  return { merged, rules };
}

/** A union as a structural node: int-or-string, one object, or an untyped node with guards. */
function unionNode(branches: Schema[]): Schema {
  const types = branches.map((b) => b.type as string).sort();
  const key = types.join(",");
  if (key === "integer,string" || key === "number,string") {
    // A quantity or duration: the number's bounds; the string's grammar comes from its rule.
    const num = branches.find((b) => b.type !== "string")!;
    const out: Schema = { "x-kubernetes-int-or-string": true };
    if (typeof num.minimum === "number" && num.minimum > -Number.MAX_SAFE_INTEGER) out.minimum = num.minimum;
    return out;
  }
  if (types.every((t) => t === "object")) {
    const disc = Object.keys((branches[0]!.properties ?? {}) as Schema).find((k) =>
      branches.every((b) => ((b.properties ?? {}) as Record<string, Schema>)[k]?.const !== undefined),
    );
    if (disc) {
      const { merged, rules } = discriminated(branches, disc);
      const out = toStructural(merged);
      out["x-kubernetes-validations"] = [...((out["x-kubernetes-validations"] as Schema[]) ?? []), ...rules];
      return out;
    }
    // Alternatives of fields (python: venv | interpreter…): one object; its rule says which mix.
    return toStructural(mergeObjects(branches, false));
  }
  // Different JSON types (workers: a number or {min, max}; runtime: a name or {command…}):
  // untyped, so the API server keeps what it gets, guarded to exactly one branch's shape.
  const out: Schema = { "x-kubernetes-preserve-unknown-fields": true };
  const objects = branches.filter((b) => b.type === "object");
  if (objects.length) {
    // One object branch keeps its fields' bounds (workers.min ≥ 1); several share only types.
    const merged =
      objects.length === 1 ? { ...objects[0]!, [RULES]: undefined } : mergeObjects(objects, false);
    const props = toStructural(merged).properties as Schema | undefined;
    if (props) out.properties = props;
  }
  if (types.some((t) => !SCALARS.includes(t) && t !== "object" && t !== "array")) return out; // a branch of no plain JSON type: nothing to guard on
  out.anyOf = branches.map(branchGuard);
  return out;
}

/**
 * Turns the JSON Schema zod emits into a Kubernetes structural schema: every node typed (or
 * int-or-string, or untyped with guards for unions of different types), no
 * `additionalProperties: false` (the API server prunes unknown fields instead, and kubectl's
 * strict field validation rejects them), no JSON-Schema-only keywords, and each refinement's rule
 * (a pattern or CEL) where zod checked it. Descriptions are kept, so `kubectl explain` shows them.
 */
export function toStructural(node: Schema): Schema {
  let out: Schema = {};
  const branches = branchesOf(node);
  if (branches) out = unionNode(branches);
  else if (typeof node.type === "string") out.type = node.type;
  for (const key of [
    "description",
    "default",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
  ])
    if (node[key] !== undefined) out[key] = node[key];
  if (node.const !== undefined && out.enum === undefined) out.enum = [node.const];
  if (typeof node.minimum === "number" && node.minimum > -Number.MAX_SAFE_INTEGER) out.minimum = node.minimum;
  if (typeof node.maximum === "number" && node.maximum < Number.MAX_SAFE_INTEGER) out.maximum = node.maximum;
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
  const cel: unknown[] = [...((out["x-kubernetes-validations"] as unknown[] | undefined) ?? [])];
  // The API server compares a number with an integer bound (0 passed minimum 0.1): CEL does not.
  if (out.type === "number" && typeof out.minimum === "number" && !Number.isInteger(out.minimum))
    cel.push({ rule: `self >= ${out.minimum}`, message: `must be at least ${out.minimum}` });
  // Map keys (environment variable names): JSON Schema's propertyNames is not structural.
  const keyPattern = (node.propertyNames as Schema | undefined)?.pattern;
  if (typeof keyPattern === "string")
    cel.push({
      rule: `self.all(k, k.matches(r'${keyPattern}'))`,
      message: "environment variable names are letters, digits and '_'",
    });
  for (const rule of (node[RULES] as CrdRule[] | undefined) ?? []) {
    if (rule.pattern) out.pattern = rule.pattern;
    // CEL cannot be placed on an untyped node (a union of different types): a policy checks it.
    if (rule.validations && !out["x-kubernetes-preserve-unknown-fields"]) cel.push(...rule.validations);
  }
  if (cel.length) out["x-kubernetes-validations"] = cel;
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

/** The structural schema of a kind's spec, with every rule the API server can check. */
export function crdSpecSchema(def: KindDef): Schema {
  const spec = toStructural(specSchemaWithRules(def.spec));
  const params = (spec.properties as Record<string, Schema> | undefined)?.parameters;
  // A sweep's parameter names are unique: a list keyed by name says so, and costs no CEL.
  if (def.kind === SWEEP && params)
    Object.assign(params, { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"] });
  return spec;
}

/** The CustomResourceDefinition of one kind, from the same zod schema that validates embedded. */
export function crdFor(def: KindDef): Schema {
  const spec = crdSpecSchema(def);
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

/**
 * The rules a CRD cannot hold, as a ValidatingAdmissionPolicy and its binding: `workers` is a
 * number or {min, max}, which a structural schema cannot type, so the CRD's own CEL cannot read
 * it. The policy's CEL sees the object untyped and checks min ≤ max and the elastic frameworks.
 */
export function admissionPolicies(): Schema[] {
  const name = `workers.${GROUP}`;
  const plural = (kind: string) => STORED_KINDS.find((k) => k.kind === kind)!.plural;
  const validations = [
    ...workersPolicyRules("object.spec").map((v) => ({
      ...v,
      expression: `object.kind != '${TRAININGJOB}' || (${v.expression})`,
    })),
    ...workersPolicyRules("object.spec.template").map((v) => ({
      ...v,
      expression: `object.kind != '${SWEEP}' || !has(object.spec.template) || (${v.expression})`,
    })),
  ].map((v) => ({ ...v, reason: "Invalid" }));
  return [
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicy",
      metadata: { name, labels: { "app.kubernetes.io/part-of": "loom" } },
      spec: {
        failurePolicy: "Fail",
        matchConstraints: {
          resourceRules: [
            {
              apiGroups: [GROUP],
              apiVersions: ["*"],
              operations: ["CREATE", "UPDATE"],
              resources: [plural(TRAININGJOB), plural(SWEEP)],
            },
          ],
        },
        validations,
      },
    },
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicyBinding",
      metadata: { name, labels: { "app.kubernetes.io/part-of": "loom" } },
      spec: { policyName: name, validationActions: ["Deny"] },
    },
  ];
}

/** What `loom crds` installs: the CRDs, then the admission policy for what they cannot check. */
export function allManifests(): Schema[] {
  return [...allCrds(), ...admissionPolicies()];
}

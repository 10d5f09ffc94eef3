import { describe, expect, it } from "vitest";
import { z } from "zod";
import { CPU_PATTERN, MEMORY_PATTERN, RULES_BY_MESSAGE } from "./crdrules.js";
import {
  admissionPolicies,
  allCrds,
  crdFor,
  crdSpecSchema,
  refinementMessages,
  rulesBySchema,
  toStructural,
} from "./crds.js";
import { findKind, STORED_KINDS } from "./kinds.js";

// biome-ignore lint/suspicious/noExplicitAny: walking untyped JSON schemas in a test
type Any = Record<string, any>;

/** Walks a schema and returns the paths of nodes that violate structural-schema rules. */
function violations(node: Any, path = "spec"): string[] {
  const out: string[] = [];
  const typed =
    node.type || node["x-kubernetes-int-or-string"] || node["x-kubernetes-preserve-unknown-fields"];
  if (!typed) out.push(`${path}: no type`);
  if (node.additionalProperties === false) out.push(`${path}: additionalProperties false`);
  if (node.properties && node.additionalProperties) out.push(`${path}: properties and additionalProperties`);
  for (const k of ["$schema", "propertyNames", "oneOf", "type"])
    if (k === "type" ? Array.isArray(node.type) : k in node) out.push(`${path}: ${k}`);
  for (const [k, v] of Object.entries(node.properties ?? {}))
    out.push(...violations(v as Any, `${path}.${k}`));
  if (node.items) out.push(...violations(node.items, `${path}[]`));
  if (typeof node.additionalProperties === "object")
    out.push(...violations(node.additionalProperties, `${path}{}`));
  return out;
}

describe("CRDs from the zod schemas", () => {
  it("are structural, with descriptions and defaults kept", () => {
    const crd = crdFor(findKind("tj")!) as Any;
    const schema = crd.spec.versions[0].schema.openAPIV3Schema;
    const spec = schema.properties.spec;
    expect(violations(spec)).toEqual([]);
    expect(spec.required).toEqual(["command"]);
    expect(spec.properties.command.description).toMatch(/program and its arguments/);
    // A number or {min, max}: the API server keeps either; Loom's admission validates it.
    expect(spec.properties.workers).toMatchObject({
      "x-kubernetes-preserve-unknown-fields": true,
      default: 1,
    });
    expect(spec.properties.framework.enum).toEqual(["none", "pytorch", "tensorflow", "mpi", "ray"]);
    expect(spec.properties.resources.properties.cpu["x-kubernetes-int-or-string"]).toBe(true);
    expect(spec.properties.env.additionalProperties).toEqual({ type: "string" });
    expect(schema.properties.status["x-kubernetes-preserve-unknown-fields"]).toBe(true);
  });

  it("name, scope, status subresource and printer columns follow the kind", () => {
    const [project, tj] = allCrds() as Any[];
    expect(project!.metadata.name).toBe("projects.loom.dev");
    expect(project!.spec.scope).toBe("Cluster");
    expect(tj!.spec.scope).toBe("Namespaced");
    expect(tj!.spec.names).toMatchObject({
      kind: "TrainingJob",
      plural: "trainingjobs",
      shortNames: ["tj"],
      listKind: "TrainingJobList",
    });
    const v = tj!.spec.versions[0];
    expect(v.subresources).toEqual({ status: {} });
    expect(v.additionalPrinterColumns.map((c: Any) => c.jsonPath)).toContain(".status.phase");
    expect(v.additionalPrinterColumns.at(-1)).toMatchObject({ name: "Age", type: "date" });
  });

  it("maps a number-or-string union to int-or-string and other unions to guarded branches", () => {
    expect(toStructural({ type: ["number", "string"] })).toEqual({ "x-kubernetes-int-or-string": true });
    const scalar = toStructural({ anyOf: [{ type: "boolean" }, { type: "string" }] });
    expect(scalar["x-kubernetes-preserve-unknown-fields"]).toBe(true);
    expect(scalar.anyOf).toHaveLength(2);
    expect(toStructural({ type: "object" })).toEqual({
      type: "object",
      "x-kubernetes-preserve-unknown-fields": true,
    });
  });

  it("TrainingJob's workers: a guarded number-or-{min, max}, quantities with Kubernetes' grammar", () => {
    const spec = crdSpecSchema(findKind("tj")!) as Any;
    expect(spec.properties.workers.properties.min).toMatchObject({ type: "integer", minimum: 1 });
    expect(spec.properties.workers.anyOf).toHaveLength(2);
    expect(spec.properties.resources.properties.memory).toMatchObject({
      "x-kubernetes-int-or-string": true,
      pattern: MEMORY_PATTERN,
      minimum: 0,
    });
    expect(spec.properties.resources.properties.cpu.pattern).toBe(CPU_PATTERN);
    const ruleText = JSON.stringify(admissionPolicies()[0]);
    expect(ruleText).toMatch(/min must not exceed max/);
  });
});

/** zod wrappers that change nothing a CRD checks. */
const WRAPPERS = new Set(["optional", "default", "prefault", "nullable", "readonly", "nonoptional"]);

/**
 * Walks a zod schema and the CRD node beside it, and names every constraint zod checks that the
 * CRD does not (or that no policy or documented operator-only rule covers).
 */
function drift(schema: z.ZodType, node: Any | undefined, path: string, inPolicy = false): string[] {
  // biome-ignore lint/suspicious/noExplicitAny: zod internals
  const def = (schema as any)._zod.def;
  if (WRAPPERS.has(def.type)) return drift(def.innerType, node, path, inPolicy);
  if (!node) return [`${path}: no CRD node`];
  const out: string[] = [];
  const has = (...keys: string[]) => keys.some((k) => node[k] !== undefined);
  const cel = () => has("x-kubernetes-validations", "pattern", "anyOf") || inPolicy;
  for (const check of def.checks ?? []) {
    const d = check._zod.def;
    if (d.check === "custom") {
      const msgs = refinementMessages(schema);
      const known = msgs.some((m) => m in RULES_BY_MESSAGE) || rulesBySchema(schema).length > 0;
      if (!known) out.push(`${path}: refinement without a CRD rule (add it to RULES_BY_MESSAGE)`);
      const operatorOnly = rulesBySchema(schema).some((r) => r.operatorOnly || r.policy);
      if (!cel() && !operatorOnly) out.push(`${path}: refinement not in the CRD`);
    } else if (d.check === "greater_than" && !has("minimum", "minItems", "minLength") && !inPolicy)
      out.push(`${path}: minimum ${d.value} missing`);
    else if (d.check === "less_than" && Math.abs(d.value) < Number.MAX_SAFE_INTEGER && !has("maximum"))
      out.push(`${path}: maximum ${d.value} missing`);
    else if (d.check === "min_length" && !has("minItems", "minLength"))
      out.push(`${path}: min length missing`);
    else if (d.check === "max_length" && !has("maxItems", "maxLength"))
      out.push(`${path}: max length missing`);
    else if (d.check === "string_format" && d.format === "regex" && !has("pattern"))
      out.push(`${path}: pattern missing`);
    else if (d.check === "string_format" && d.format === "starts_with" && !has("pattern"))
      out.push(`${path}: startsWith missing`);
  }
  switch (def.type) {
    case "object":
      for (const [k, v] of Object.entries(def.shape))
        out.push(...drift(v as z.ZodType, node.properties?.[k], `${path}.${k}`, inPolicy));
      break;
    case "array":
      out.push(...drift(def.element, node.items, `${path}[]`, inPolicy));
      break;
    case "record":
      if (def.keyType._zod.def.checks?.length && !has("x-kubernetes-validations"))
        out.push(`${path}: key rule missing`);
      out.push(...drift(def.valueType, node.additionalProperties, `${path}{}`, inPolicy));
      break;
    case "enum":
      if (!has("enum")) out.push(`${path}: enum missing`);
      break;
    case "union": {
      if (
        !has("anyOf", "x-kubernetes-int-or-string", "x-kubernetes-validations", "enum") &&
        !node.properties?.rule?.enum
      )
        out.push(`${path}: union not guarded`);
      // An object branch of an untyped union: its CEL lives in the admission policy.
      // A discriminated union's branch bounds are CEL rules on the merged object (crds.ts).
      const untyped = !!node["x-kubernetes-preserve-unknown-fields"] || !!node.properties?.rule?.enum;
      for (const opt of def.options)
        if (opt._zod.def.type === "object") out.push(...drift(opt, node, path, inPolicy || untyped));
      break;
    }
  }
  return out;
}

describe("CRDs cannot drift from the zod schemas", () => {
  it.each(STORED_KINDS.map((k) => [k.kind, k] as const))(
    "%s: every zod constraint has a CRD rule",
    (_k, def) => {
      expect(drift(def.spec, crdSpecSchema(def), "spec")).toEqual([]);
    },
  );

  it("notices a constraint the CRD lacks", () => {
    const spec = z.strictObject({ n: z.number().min(3), s: z.string().refine(() => true, "brand new rule") });
    expect(
      drift(spec, { type: "object", properties: { n: { type: "number" }, s: { type: "string" } } }, "spec"),
    ).toEqual([
      "spec.n: minimum 3 missing",
      "spec.s: refinement without a CRD rule (add it to RULES_BY_MESSAGE)",
      "spec.s: refinement not in the CRD",
    ]);
  });
});

import { describe, expect, it } from "vitest";
import { allCrds, crdFor, toStructural } from "./crds.js";
import { findKind } from "./kinds.js";

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

  it("maps a number-or-string union to int-or-string and unknown unions to preserved fields", () => {
    expect(toStructural({ type: ["number", "string"] })).toEqual({ "x-kubernetes-int-or-string": true });
    expect(toStructural({ anyOf: [{ type: "boolean" }, { type: "string" }] })).toEqual({
      "x-kubernetes-preserve-unknown-fields": true,
    });
    expect(toStructural({ type: "object" })).toEqual({
      type: "object",
      "x-kubernetes-preserve-unknown-fields": true,
    });
  });
});

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CliError } from "../errors.js";
import { buildProgram } from "../main.js";

/** `loom apply` on hostile YAML: one line, exit code 1, and no request sent. */
async function apply(text: string): Promise<{ error: unknown; requests: number }> {
  const dir = mkdtempSync(join(tmpdir(), "loom-apply-"));
  const file = join(dir, "m.yaml");
  writeFileSync(file, text);
  let requests = 0;
  const program = buildProgram({
    client: () => ({
      api: {
        request: async () => {
          requests++;
          return {} as never;
        },
        stream: async () => {
          throw new Error("no streams here");
        },
      },
      defaultProject: "p",
    }),
    stdout: { write: () => true },
    stderr: { write: () => true },
  });
  for (const c of [program, ...program.commands]) c.exitOverride();
  try {
    await program.parseAsync(["node", "loom", "apply", "-f", file]);
    return { error: undefined, requests };
  } catch (error) {
    return { error, requests };
  }
}

describe("loom apply on hostile YAML", () => {
  it("refuses an alias bomb (billion laughs) with one line and exit code 1, sending nothing", async () => {
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 10; i++) {
      const prev = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      levels.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(", ")}]`);
    }
    const bomb = `apiVersion: loom.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: boom}\nspec:\n${levels.map((l) => `  ${l}`).join("\n")}\n`;
    const { error, requests } = await apply(bomb);
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(1);
    expect((error as Error).message).toMatch(/invalid YAML: .*alias/i);
    expect((error as Error).message.split("\n")).toHaveLength(1);
    expect(requests).toBe(0);
  });

  it("refuses broken YAML with the file and line, exit code 1", async () => {
    const { error, requests } = await apply("kind: [unclosed\n");
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(1);
    expect((error as Error).message).toMatch(/m\.yaml:.*invalid YAML/);
    expect(requests).toBe(0);
  });
});

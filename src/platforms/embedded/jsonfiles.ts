import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";

/**
 * Small JSON records kept as `DIR/PROJECT/NAME.json`, read back whole at start (what the
 * embedded platform needs to re-adopt its work after a restart). Unreadable files are skipped
 * with a warning, never fatal.
 */
export class JsonFiles<T> {
  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {
    mkdirSync(dir, { recursive: true });
  }

  write(project: string, name: string, value: T): void {
    mkdirSync(join(this.dir, project), { recursive: true });
    writeFileSync(this.file(project, name), JSON.stringify(value));
  }

  remove(project: string, name: string): void {
    rmSync(this.file(project, name), { force: true });
  }

  readAll(): T[] {
    const out: T[] = [];
    for (const project of list(this.dir)) {
      for (const file of list(join(this.dir, project))) {
        if (!file.endsWith(".json")) continue;
        try {
          out.push(JSON.parse(readFileSync(join(this.dir, project, file), "utf8")) as T);
        } catch (err) {
          this.log.warn({ err, file: join(project, file) }, "could not read a record; ignoring it");
        }
      }
    }
    return out;
  }

  private file(project: string, name: string): string {
    return join(this.dir, project, `${name}.json`);
  }
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dirname, "../..");
/** `npm run image`'s Python image (PyTorch on CPU), as pods on the real node name it. */
export const PYTHON_IMAGE = "loom-python:0.1.0";

/**
 * Imports loom-python into the real node's containerd (the cluster in `state`) unless it is
 * there: `npm run image`'s tarball when it exists, else built with scripts/image.sh first.
 */
export function importPythonImage(state: string): void {
  const node = join(state, "node");
  const ctr = (args: string[]) =>
    execFileSync(
      join(node, "bin/ctr"),
      ["--address", join(node, "containerd.sock"), "-n", "k8s.io", ...args],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
  if (ctr(["images", "ls", "-q"]).includes(`docker.io/library/${PYTHON_IMAGE}`)) return;
  // npm run image's tarball when it is there (test/image.e2e makes it); else build it (minutes).
  const out = process.env.LOOM_IMAGE_OUT ?? join(homedir(), ".cache/loom/image/out");
  let tarball = join(out, `${PYTHON_IMAGE.replace(":", "-")}.tar`);
  if (!existsSync(tarball)) {
    const built = execFileSync("bash", [join(ROOT, "scripts/image.sh"), "python"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    });
    tarball = built.trim().split("\n").at(-1)!.split(" ")[1]!;
  }
  ctr(["images", "import", tarball]);
}

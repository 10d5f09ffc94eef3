import { describe, expect, it } from "vitest";
import { AppSpec } from "../../api/app.js";
import { serviceOfReplica } from "../inferenceservice/names.js";
import { workspaceOfReplica } from "../workspace/reconciler.js";
import { appProgram } from "./command.js";
import { appOfReplica, appRevisionName } from "./reconciler.js";

const spec = (s: Record<string, unknown>) => AppSpec.parse(s);

describe("appProgram", () => {
  it("starts gradio on the replica's address with analytics off, and adds gradio to a built environment", () => {
    const p = appProgram(spec({ framework: "gradio", file: "app.py" }));
    expect(p.command.slice(4)).toEqual([
      "env",
      "GRADIO_SERVER_NAME=$HOST",
      "GRADIO_SERVER_PORT=$PORT",
      "python3",
      "app.py",
    ]);
    expect(p.env).toMatchObject({ GRADIO_ANALYTICS_ENABLED: "False", GRADIO_ROOT_PATH: "" });
    expect(p.readinessPath).toBe("/config");
    expect(p.python).toMatchObject({ requirements: ["gradio"] });
  });

  it("starts streamlit at the root path, headless, and keeps a venv as it is", () => {
    const p = appProgram(spec({ framework: "streamlit", file: "s.py", python: { venv: "/v" } }));
    expect(p.command).toEqual(
      expect.arrayContaining(["streamlit", "run", "s.py", "--server.baseUrlPath", "", "--server.headless"]),
    );
    expect(p.readinessPath).toBe("/_stcore/health");
    expect(p.python).toEqual({ venv: "/v" });
  });

  it("refuses a custom app without a command, and a gradio app without a file", () => {
    expect(AppSpec.safeParse({ framework: "custom" }).success).toBe(false);
    expect(AppSpec.safeParse({ framework: "gradio" }).success).toBe(false);
    expect(spec({ framework: "custom", command: ["x"] }).replicas).toEqual({ min: 0, max: 1 });
    expect(spec({ framework: "custom", command: ["x"] }).access).toBe("project");
  });
});

describe("replica names", () => {
  it("tells an App's replicas from an InferenceService's and a workspace's of similar names", () => {
    const rev = appRevisionName("chat", 3);
    expect(appOfReplica(`${rev}-r0`)).toBe("chat");
    // An InferenceService named chat-app has revisions chat-app-N: not an App's.
    expect(appOfReplica("chat-app-2-r0")).toBeUndefined();
    expect(serviceOfReplica("chat-app-2-r0")).toBe("chat-app");
    expect(workspaceOfReplica(`${rev}-r0`)).toBeUndefined();
  });
});

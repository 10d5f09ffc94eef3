import { describe, expect, it } from "vitest";
import { onlyProject } from "./metrics.js";

describe("onlyProject", () => {
  it("keeps the project's series, unlabelled ones and HELP/TYPE; drops other projects'", () => {
    const text = [
      "# HELP loom_gateway_requests_total Requests.",
      "# TYPE loom_gateway_requests_total counter",
      'loom_gateway_requests_total{project="a",service="chat",revision="chat-1",code="200"} 3',
      'loom_gateway_requests_total{project="b",service="secret",revision="secret-1",code="200"} 9',
      'loom_gateway_requests_total{project="ab",service="x",revision="x-1",code="200"} 1',
      'loom_gateway_retries_total{service="y",project="b",reason="connect"} 1',
      "process_cpu_seconds_total 1.5",
    ].join("\n");
    const out = onlyProject(text, "a");
    expect(out).toContain('project="a"');
    expect(out).not.toContain("secret");
    expect(out).not.toContain('project="ab"');
    expect(out).not.toContain('project="b"');
    expect(out).toContain("process_cpu_seconds_total 1.5");
    expect(out).toContain("# TYPE loom_gateway_requests_total counter");
  });
});

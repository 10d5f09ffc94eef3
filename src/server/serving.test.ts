import { request } from "node:http";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { closeUpstreams, listen, listenOn } from "../../test/upstreams.js";
import { Gateway, type ServiceEndpoint } from "../gateway/gateway.js";
import { openAIFastLane, ServingDirectory, serverWith } from "./serving.js";

/**
 * The per-endpoint routes (/serving/PROJECT/SERVICE/PATH) through the real front and fast lane
 * to a real upstream, with no model server behind it: what the embedded server does for a
 * runtime that does not speak OpenAI, without PyTorch.
 */

const gateways: Gateway[] = [];

afterEach(async () => {
  for (const g of gateways.splice(0)) g.close();
  await closeUpstreams();
});

function call(
  port: number,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function servingServer(): Promise<number> {
  const upstream = await listen((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => res.end(`${req.method} ${req.url} [${Buffer.concat(chunks).toString()}]`));
  });
  const directory = new ServingDirectory();
  const gateway = new Gateway(
    { directory, scaler: directory, registry: new Registry() },
    { autoscale: false },
  );
  gateways.push(gateway);
  directory.attach(gateway);
  const endpoint: ServiceEndpoint = {
    project: "team",
    service: "echo",
    revisions: [
      {
        name: "echo-1",
        weight: 100,
        replicas: [{ id: "r0", host: "127.0.0.1", port: upstream, ready: true }],
      },
    ],
    autoscaling: { minReplicas: 1, maxReplicas: 1, targetConcurrency: 4 },
  };
  directory.replaceAll([endpoint]);
  const lane = openAIFastLane({ gateway, directory }, () => ({
    id: "t1",
    name: "alice",
    project: "team",
    role: "admin",
  }));
  // The node server the fast lane sits in front of answers 599 if the lane hands a request over.
  const server = serverWith(lane)((_req, res) => {
    res.statusCode = 599;
    res.end();
  }, {});
  return listenOn(server);
}

describe("the /serving/PROJECT/SERVICE/ routes", () => {
  it("forward bodyless requests (GET, HEAD, DELETE) and empty POSTs to a replica", async () => {
    const port = await servingServer();
    for (const method of ["GET", "DELETE", "POST"]) {
      const got = await call(port, method, "/serving/team/echo/health?x=1");
      expect(got, method).toEqual({ status: 200, body: `${method} /health?x=1 []` });
    }
    const head = await call(port, "HEAD", "/serving/team/echo/health");
    expect(head.status).toBe(200);
    const withBody = await call(port, "PUT", "/serving/team/echo/items/1", "hello");
    expect(withBody).toEqual({ status: 200, body: "PUT /items/1 [hello]" });
  });
});

import { describe, expect, it } from "vitest";
import { MODEL_KEY_ENV, MODEL_KEY_FILE, MODEL_PYTHON_DIR } from "../../ports/models.js";
import {
  CREDENTIALS_DIR,
  credentialSecret,
  credentialSecretName,
  MLFLOW_CREDENTIALS_KEY,
  MODEL_KEY,
  MODEL_PYTHON_PATH,
  SITECUSTOMIZE_KEY,
  secretFileCredentials,
  splitCredentials,
  TOKEN_KEY,
} from "./credentials.js";
import { podTemplate } from "./pods.js";
import { MEMBER_RESOURCES, memberRules } from "./project.js";

const ref = { kind: "TrainingJob", project: "team-a", name: "train", uid: "uid-1" };
const worker = {
  command: ["python", "train.py"],
  env: { MLFLOW_TRACKING_URI: "http://loom", MLFLOW_TRACKING_TOKEN: "s3cret-token", X: "1" },
  allocation: { node: "n", cpuMillis: 1000, memoryBytes: 0, gpus: [] },
};

describe("workload credentials on Kubernetes", () => {
  it("moves the tracking token out of env into a token file and an mlflow credentials file", () => {
    const { env, files } = splitCredentials(worker.env);
    expect(env).toEqual({ MLFLOW_TRACKING_URI: "http://loom", X: "1" });
    expect(files[TOKEN_KEY]).toBe("s3cret-token");
    expect(files[MLFLOW_CREDENTIALS_KEY]).toBe(
      "[mlflow]\nmlflow_tracking_username = loom\nmlflow_tracking_password = s3cret-token\n",
    );
    expect(splitCredentials({ A: "b" }).files).toEqual({});
  });

  it("a pod with credentials mounts its Secret and has no credential anywhere in its spec but the Secret's name", () => {
    const { env, files } = splitCredentials(worker.env);
    const pod = podTemplate({
      worker: { ...worker, env },
      defaultImage: undefined,
      containerName: "worker",
      labels: {},
      env: {},
      resources: {},
      credentials: { secretName: credentialSecretName("train"), files },
    });
    expect(JSON.stringify(pod)).not.toContain("s3cret-token");
    const c = pod.spec.containers[0]!;
    expect(c.env).toEqual(
      expect.arrayContaining([
        { name: "HOME", value: "/home/loom" },
        { name: "LOOM_TOKEN_FILE", value: `${CREDENTIALS_DIR}/token` },
      ]),
    );
    expect(pod.spec.volumes).toContainEqual({
      name: "loom-credentials",
      secret: { secretName: "train-credentials", defaultMode: 0o440 },
    });
    expect(c.volumeMounts).toContainEqual({
      name: "loom-credentials",
      mountPath: "/home/loom/.mlflow/credentials",
      subPath: MLFLOW_CREDENTIALS_KEY,
      readOnly: true,
    });
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, fsGroup: 1000 });
    expect(c.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(pod.spec.automountServiceAccountToken).toBe(false);

    // A spec that sets HOME keeps it: the mlflow file goes under it, and no emptyDir home is added.
    const own = podTemplate({
      worker: { ...worker, env: { ...env, HOME: "/home/me/" } },
      defaultImage: undefined,
      containerName: "worker",
      labels: {},
      env: {},
      resources: {},
      credentials: { secretName: "train-credentials", files },
    });
    expect(own.spec.containers[0]!.volumeMounts).toContainEqual(
      expect.objectContaining({ mountPath: "/home/me/.mlflow/credentials" }),
    );
    expect(own.spec.volumes).not.toContainEqual(expect.objectContaining({ name: "loom-home" }));
  });

  it("model access: the key and the openai bridge are Secret files, PYTHONPATH and LOOM_OPENAI_KEY_FILE name where they are mounted", () => {
    // What ports/models.ts hands a workload (server/modelaccess.ts), under an env with the spec's own PYTHONPATH.
    const files = secretFileCredentials([
      { path: MODEL_KEY_FILE, data: "sk-loom-s3cret\n", mode: 0o600 },
      { path: `${MODEL_PYTHON_DIR}/sitecustomize.py`, data: "# bridge\n", mode: 0o644 },
    ]);
    expect(files).toEqual({ [MODEL_KEY]: "sk-loom-s3cret\n", [SITECUSTOMIZE_KEY]: "# bridge\n" });
    const env = {
      OPENAI_BASE_URL: "http://loom.loom-system:7470/v1",
      [MODEL_KEY_ENV]: `$(HOME)/${MODEL_KEY_FILE}`,
      PYTHONPATH: `$(HOME)/${MODEL_PYTHON_DIR}:/src`,
    };
    const pod = podTemplate({
      worker: { ...worker, env },
      defaultImage: undefined,
      containerName: "worker",
      labels: {},
      env: {},
      resources: {},
      credentials: { secretName: "train-credentials", files },
    });
    expect(JSON.stringify(pod)).not.toContain("sk-loom-s3cret");
    const c = pod.spec.containers[0]!;
    const envOf = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
    expect(envOf).toMatchObject({
      OPENAI_BASE_URL: "http://loom.loom-system:7470/v1",
      [MODEL_KEY_ENV]: `${CREDENTIALS_DIR}/${MODEL_KEY}`,
      PYTHONPATH: `${MODEL_PYTHON_PATH}:/src`,
    });
    expect(c.env.filter((e: { name: string }) => e.name === "PYTHONPATH")).toHaveLength(1);
    expect(c.volumeMounts).toContainEqual({
      name: "loom-credentials",
      mountPath: `${MODEL_PYTHON_PATH}/sitecustomize.py`,
      subPath: SITECUSTOMIZE_KEY,
      readOnly: true,
    });
    const secret = credentialSecret(ref, "train-credentials", files);
    expect(Buffer.from(secret.data[MODEL_KEY]!, "base64").toString()).toBe("sk-loom-s3cret\n");
  });

  it("one Secret per workload, owned by it (garbage-collected with it), names never shared", () => {
    const s = credentialSecret(ref, "train-credentials", { token: "t" });
    expect(s.metadata.ownerReferences).toEqual([expect.objectContaining({ uid: "uid-1", controller: true })]);
    expect(s.data).toEqual({ token: Buffer.from("t").toString("base64") });
    const long = "x".repeat(60);
    expect(credentialSecretName(long).length).toBeLessThanOrEqual(63);
    expect(credentialSecretName(long)).not.toBe(credentialSecretName(`${long}y`));
  });

  it("member Roles name Loom's kinds only: no wildcard, no status, no secrets, no exec", () => {
    expect(MEMBER_RESOURCES).toContain("trainingjobs");
    for (const role of ["viewer", "editor", "admin"] as const) {
      const resources = memberRules(role).flatMap((r) => r.resources);
      expect(resources).not.toContain("*");
      expect(resources.filter((r) => r.includes("/") && r !== "pods/log")).toEqual([]);
      expect(resources).not.toContain("secrets");
    }
  });
});

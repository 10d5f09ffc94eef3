import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import type { Cluster } from "../api/cluster.js";
import { BadRequestError } from "../api/errors.js";
import { CLUSTER } from "../api/kinds.js";
import { VERSION } from "../lib/version.js";
import { KubeClient } from "../platforms/kubernetes/client.js";
import { kubeMemberConnector } from "../platforms/kubernetes/cluster.js";
import { KubeEventRecorder } from "../platforms/kubernetes/events.js";
import { KubeHomeClones } from "../platforms/kubernetes/homeclone.js";
import { KubernetesRuntime } from "../platforms/kubernetes/runtime.js";
import { DEFAULT_SYSTEM_NAMESPACE, KubeSecretStore } from "../platforms/kubernetes/secrets.js";
import { KubeResourceStore } from "../platforms/kubernetes/store.js";
import type { MemberConnector } from "../ports/fleet.js";
import type { LogOptions, Runtime, WorkloadRef } from "../ports/runtime.js";
import type { SecretStore } from "../ports/secrets.js";
import type { ResourceStore, Role, TokenInfo, TokenStore, TokenSummary } from "../ports/store.js";
import { buildApp } from "../server/app.js";

/** One token, valid for the life of this process only. */
class EphemeralTokens implements TokenStore {
  readonly token = `loom_${randomBytes(24).toString("base64url")}`;

  async create(_name: string, _role: Role): Promise<{ token: string; info: TokenInfo }> {
    throw new Error("tokens are not stored in cluster mode");
  }

  async verify(token: string): Promise<TokenInfo | undefined> {
    return token === this.token ? this.info : undefined;
  }

  private readonly info: TokenInfo = { id: "kubeconfig", name: "kubeconfig", role: "admin" };
  private readonly createdAt = new Date().toISOString();

  /** The one token; API keys are not kept here (the cluster's RBAC and Secrets are). */
  async list(filter: { apiKeys?: boolean } = {}): Promise<TokenSummary[]> {
    return filter.apiKeys ? [] : [{ ...this.info, createdAt: this.createdAt }];
  }

  /** Nothing to revoke: the token dies with this process. */
  async revoke(): Promise<boolean> {
    return false;
  }

  async revokeWorkload(): Promise<number> {
    return 0;
  }
}

/**
 * Loom's API in front of a Kubernetes cluster, in the CLI's own process on a loopback port: the
 * CLI then speaks one protocol to both platforms, with the same validation and messages, while
 * every request reaches the API server with the kubeconfig's identity (so RBAC decides, not Loom).
 */
export async function startKubeApi(opts: {
  kubeconfig?: string;
  context?: string;
  log: Logger;
  /** List-watch pods and nodes first (capacity views that count others' pods too). */
  watchPods?: boolean;
  /** Loom's own namespace, where fleet members' kubeconfig Secrets are kept (default loom-system). */
  systemNamespace?: string;
}) {
  const client = KubeClient.fromKubeconfig(opts.kubeconfig, opts.context);
  const tokens = new EphemeralTokens();
  const runtime = new KubernetesRuntime({ client, log: opts.log });
  if (opts.watchPods) await runtime.watchPods();
  const store = new KubeResourceStore(client, opts.log);
  // Written with the kubeconfig's identity: RBAC on Secrets in Loom's namespace decides.
  const secrets = new KubeSecretStore(client, opts.systemNamespace ?? DEFAULT_SYSTEM_NAMESPACE);
  const app = await buildApp({
    store,
    secrets,
    memberLogs: (cluster) => memberLogsOnDemand(store, secrets, kubeMemberConnector(opts.log), cluster),
    tokens,
    events: new KubeEventRecorder(client),
    runtime,
    metrics: new Registry(),
    log: opts.log,
    version: VERSION,
    ensureDefaultProject: false,
    // loom run --from ws/NAME: the clone of the home, made with the kubeconfig's identity.
    workspaceSnapshots: new KubeHomeClones(client),
  });
  const url = await app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    token: tokens.token,
    async close() {
      await app.close();
      await runtime.close();
    },
  };
}

/**
 * A fleet member's workers' logs where no fleet runs (this short-lived API): the member is
 * reached for the one request, with the kubeconfig its Cluster's Secret holds, and let go when the
 * log ends. The operator's API reads them through its fleet instead.
 */
function memberLogsOnDemand(
  store: ResourceStore,
  secrets: SecretStore,
  connector: MemberConnector,
  name: string,
): Pick<Runtime, "logs"> {
  return {
    async logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
      const cluster = (await store.get(CLUSTER, "", name)) as Cluster;
      const secret = cluster.spec.kubeconfigSecret?.name;
      const kubeconfig = secret ? await secrets.get(secret) : undefined;
      if (kubeconfig === undefined)
        throw new BadRequestError(
          `cluster ${name} has no kubeconfig secret to reach it with; loom describe cluster ${name} says why`,
        );
      const member = await connector.connect(cluster, kubeconfig);
      if (!member.logs) {
        member.close();
        throw new BadRequestError(`cluster ${name} does not serve its workers' logs`);
      }
      try {
        const stream = await member.logs(ref, opts);
        stream.once("close", () => member.close());
        return stream;
      } catch (err) {
        member.close();
        throw err;
      }
    },
  };
}

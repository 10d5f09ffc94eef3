import { BadRequestError, ForbiddenError, LoomError, NotFoundError } from "../../api/errors.js";
import { TRAININGJOB } from "../../api/kinds.js";
import type { WorkspaceSnapshots } from "../../ports/workspaces.js";
import type { KubeClient } from "./client.js";
import { namespaceOf, ownerRef, workloadLabels } from "./naming.js";

/**
 * Where a job's clone of a workspace's home is mounted (read-only), the workers' working dir:
 * beside the checkpoint mounts, since HOME (/home/loom) is each worker's own writable directory.
 */
export const CODE_MOUNT = "/loom/code";

/** The claim a TrainingJob (by uid) runs from under spec.fromWorkspace: its clone of the home. */
export function codeClaimName(jobUid: string): string {
  return `code-${jobUid}`.slice(0, 63);
}

interface Claim {
  metadata: { name: string; deletionTimestamp?: string };
  spec: { storageClassName?: string; resources?: { requests?: { storage?: string } } };
  status?: { phase?: string; capacity?: { storage?: string } };
}

/** What take() found, for commit(): the source claim and what the clone must match. */
interface Staged {
  project: string;
  workspace: string;
  claim: string;
  storageClassName: string;
  size: string;
}

/**
 * `loom run --from ws/NAME` on Kubernetes: the job's code is a clone of the workspace's home claim
 * (a PersistentVolumeClaim whose dataSource is `NAME-home`), made when the job is created so later
 * edits in the notebook do not change it, owned by the job (the garbage collector deletes it with
 * the job) and mounted read-only by every worker. Cloning is a CSI feature: take() refuses, saying
 * what to do, a home whose storage class cannot clone; a CSI driver that does not support it
 * leaves the clone Pending with its ProvisioningFailed event (`kubectl describe pvc code-UID`).
 * ReadOnlyMany: the gang's workers, on any node, read the same clone.
 */
export class KubeHomeClones implements WorkspaceSnapshots {
  constructor(private readonly client: KubeClient) {}

  async take(project: string, name: string): Promise<string> {
    const ns = namespaceOf(project);
    const claim = `${name}-home`.slice(0, 63);
    const pvc = await this.client
      .request<Claim>("GET", `/api/v1/namespaces/${ns}/persistentvolumeclaims/${claim}`)
      .catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
        throw new BadRequestError(
          `spec.fromWorkspace: workspace ${name} has no home yet (its claim ${claim} is made when it first runs): start it (loom start ws/${name}), then run the job`,
        );
      });
    await this.mayCreateClaims(ns);
    const cls = pvc.spec.storageClassName;
    const instead = "or build an image with the code and run the job from it (spec.image)";
    if (!cls)
      throw new BadRequestError(
        `spec.fromWorkspace clones workspace ${name}'s home (claim ${claim}), which has no storage class (the cluster has no default one): cloning needs a CSI storage class that supports it; give the workspace one (spec.home.storageClassName), ${instead}`,
      );
    const sc = await this.client
      .request<{ provisioner?: string }>("GET", `/apis/storage.k8s.io/v1/storageclasses/${cls}`)
      .catch((err: unknown) => {
        // An identity that may not read storage classes (a member's kubeconfig): the clone is
        // tried, and a class that cannot clone leaves it Pending with the driver's event.
        if (err instanceof LoomError && err.httpStatus === 403) return { provisioner: "unknown" };
        if (!(err instanceof NotFoundError)) throw err;
        throw new BadRequestError(
          `spec.fromWorkspace: storage class ${cls} of workspace ${name}'s home (claim ${claim}) does not exist, so its claim cannot be cloned; ${instead}`,
        );
      });
    const provisioner = sc.provisioner ?? "";
    // In-tree provisioners and static volumes (kubernetes.io/no-provisioner) never clone: only CSI drivers do.
    if (provisioner === "" || provisioner.startsWith("kubernetes.io/"))
      throw new BadRequestError(
        `spec.fromWorkspace: storage class ${cls} of workspace ${name}'s home (provisioner ${provisioner || "none"}) cannot clone a claim: only CSI drivers clone volumes; give the workspace a CSI storage class that supports cloning (spec.home.storageClassName; a new workspace, since a claim's class is fixed), ${instead}`,
      );
    if (pvc.metadata.deletionTimestamp)
      throw new BadRequestError(`spec.fromWorkspace: workspace ${name}'s home is being deleted`);
    const size = pvc.status?.capacity?.storage ?? pvc.spec.resources?.requests?.storage ?? "10Gi";
    const staged: Staged = { project, workspace: name, claim, storageClassName: cls, size };
    return JSON.stringify(staged);
  }

  async commit(handle: string, project: string, uid: string, name?: string): Promise<void> {
    const staged = JSON.parse(handle) as Staged;
    const job = { kind: TRAININGJOB, project, name: name ?? uid, uid };
    await this.client.request("POST", `/api/v1/namespaces/${namespaceOf(project)}/persistentvolumeclaims`, {
      body: {
        apiVersion: "v1",
        kind: "PersistentVolumeClaim",
        metadata: {
          name: codeClaimName(uid),
          labels: { ...workloadLabels(job), "loom.dev/from-workspace": staged.workspace },
          // Deleted with the job; a job whose name we were not told is still found by uid.
          ...(name ? { ownerReferences: [{ ...ownerRef(job), blockOwnerDeletion: false }] } : {}),
        },
        spec: {
          accessModes: ["ReadOnlyMany"],
          // A clone is of the source's class and at least its size (the CSI rules for clones).
          storageClassName: staged.storageClassName,
          resources: { requests: { storage: staged.size } },
          dataSource: { kind: "PersistentVolumeClaim", name: staged.claim },
        },
      },
      query: { fieldManager: "loom" },
    });
  }

  /**
   * Whether this identity may create the clone (asked before the job exists, so a refusal leaves
   * no job behind): the operator's ServiceAccount may; a member's own kubeconfig (the CLI's
   * --kubeconfig) may not unless an admin granted it.
   */
  private async mayCreateClaims(ns: string): Promise<void> {
    const review = await this.client.request<{ status?: { allowed?: boolean } }>(
      "POST",
      "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
      {
        body: {
          apiVersion: "authorization.k8s.io/v1",
          kind: "SelfSubjectAccessReview",
          spec: { resourceAttributes: { namespace: ns, verb: "create", resource: "persistentvolumeclaims" } },
        },
      },
    );
    if (!review.status?.allowed)
      throw new ForbiddenError(
        `spec.fromWorkspace clones the workspace's home into a PersistentVolumeClaim, and this Kubernetes identity may not create one in ${ns}: submit the job through Loom's API on the operator (LOOM_URL and LOOM_TOKEN; the operator runs with --data-dir), or ask a cluster admin for create on persistentvolumeclaims there`,
      );
  }

  /** Nothing was made before the job existed: take() only checks. */
  async discard(_handle: string): Promise<void> {}
}

import { kindByKind, toFieldIssues } from "../api/kinds.js";
import { type Condition, getCondition, type Resource, setCondition } from "../api/meta.js";
import type { EventRecorder, ResourceStore } from "../ports/store.js";
import type { ReconcileResult, Reconciler } from "../reconcile/controller.js";

/** The condition a controller's validation step writes: False with reason Invalid, naming the fields. */
export const VALID_CONDITION = "Valid";
export const INVALID_REASON = "Invalid";

/** Results by kind, uid and generation: a spec does not change without a new generation. */
const verdicts = new Map<string, string | null>();
const MAX_VERDICTS = 20_000;

/**
 * What is wrong with a stored object's spec, by the same zod schema `loom apply` uses, as
 * "spec.workers: must be …; spec.resources.memory: …"; undefined when it is valid. Objects reach
 * controllers without that check when stored before the CRDs were strict, or by other clients.
 */
export function invalidSpec(obj: Resource): string | undefined {
  const def = kindByKind(obj.kind);
  if (!def) return undefined;
  const key = `${obj.kind}/${obj.metadata.uid}/${obj.metadata.generation}`;
  const known = verdicts.get(key);
  if (known !== undefined) return known ?? undefined;
  const parsed = def.spec.safeParse(obj.spec ?? {});
  const verdict = parsed.success
    ? null
    : toFieldIssues(parsed.error, "spec")
        .map((i) => `${i.path}: ${i.message}`)
        .join("; ");
  if (verdicts.size >= MAX_VERDICTS) verdicts.clear();
  verdicts.set(key, verdict);
  return verdict ?? undefined;
}

export interface ValidationDeps {
  kind: string;
  /** The object as the informer's cache has it (no request per reconcile). */
  get: (key: string) => Resource | undefined;
  store: ResourceStore;
  events: EventRecorder;
  now: () => Date;
  /**
   * Whether the loop handles a Failed object itself (a TrainingJob: it stops the workers a job
   * that has finished left running). Other kinds' loops read the spec throughout, so an invalid
   * object is never handed to them.
   */
  failedIsTerminal?: boolean;
}

/**
 * The validation step at the start of every reconcile: an object whose spec does not validate
 * is marked Failed (condition Valid=False, reason Invalid, the fields named, and an event) once,
 * and the loop is not run on it, so a bad spec neither throws out of the loop (a retry forever)
 * nor runs with a misread spec. Deletion always goes through: finalizers must run.
 */
export class ValidatingReconciler implements Reconciler {
  readonly name: string;

  constructor(
    private readonly inner: Reconciler,
    private readonly deps: ValidationDeps,
  ) {
    this.name = inner.name;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const obj = this.deps.get(key);
    if (!obj || obj.metadata.deletionTimestamp) return this.inner.reconcile(key);
    const problem = invalidSpec(obj);
    const status = (obj.status ?? {}) as { phase?: string; conditions?: Condition[] };
    const prev = getCondition(status.conditions, VALID_CONDITION);
    if (!problem) {
      // Fixed (kinds whose loops recover): the condition says so before the loop runs again.
      if (prev?.status === "False" && !this.deps.failedIsTerminal)
        await this.writeCondition(obj, status, {
          status: "True",
          reason: "Valid",
          message: "the spec is valid",
        });
      return this.inner.reconcile(key);
    }
    const message = `invalid spec: ${problem}. Fix the manifest and apply it again (loom apply checks it first).`;
    if (status.phase !== "Failed" || prev?.status !== "False" || prev.message !== message) {
      await this.writeCondition(
        obj,
        { ...status, phase: "Failed" },
        { status: "False", reason: INVALID_REASON, message },
      );
      const ref = {
        kind: obj.kind,
        project: obj.metadata.project ?? "",
        name: obj.metadata.name,
        uid: obj.metadata.uid,
      };
      await this.deps.events.record(ref, "Warning", INVALID_REASON, message);
      return {};
    }
    return this.deps.failedIsTerminal ? this.inner.reconcile(key) : {};
  }

  private async writeCondition(
    obj: Resource,
    status: { phase?: string; conditions?: Condition[] },
    cond: Omit<Condition, "type" | "lastTransitionTime">,
  ): Promise<void> {
    const conditions = setCondition(status.conditions, { type: VALID_CONDITION, ...cond }, this.deps.now());
    const extra =
      cond.status === "False" && this.deps.failedIsTerminal
        ? { completionTime: this.deps.now().toISOString() }
        : {};
    await this.deps.store.updateStatus({ ...obj, status: { ...status, ...extra, conditions } });
  }
}

/**
 * Wraps a kind's loop in its validation step, reading objects from `informer` (looked up when a
 * key comes: informers are made after their controllers).
 */
export function validatingFor(deps: Pick<ValidationDeps, "store" | "events" | "now">) {
  return (
    inner: Reconciler,
    kind: string,
    informer: () => { get(key: string): Resource | undefined } | undefined,
    failedIsTerminal = false,
  ): ValidatingReconciler =>
    new ValidatingReconciler(inner, { ...deps, kind, get: (key) => informer()?.get(key), failedIsTerminal });
}

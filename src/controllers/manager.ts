import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { displayKey } from "../api/meta.js";
import type { Project } from "../api/project.js";
import { SWEEP_LABEL } from "../api/sweep.js";
import { isFinished, type TrainingJob } from "../api/trainingjob.js";
import type { FleetLeases, MemberCheckpoints } from "../ports/fleet.js";
import type { WorkloadModels } from "../ports/models.js";
import type { Runtime, WorkloadRef } from "../ports/runtime.js";
import type { Scheduler, Snapshot } from "../ports/scheduler.js";
import type { SshKeyStore } from "../ports/sshkeys.js";
import type { EventRecorder, ResourceStore } from "../ports/store.js";
import type { WorkloadTracking } from "../ports/tracking.js";
import { Controller, type Reconciler } from "../reconcile/controller.js";
import { Informer, storeSource } from "../reconcile/informer.js";
import { createControllerMetrics } from "../reconcile/metrics.js";
import { type AdmissionOffer, admittedStatus } from "./admission/offer.js";
import { ADMISSION_KEY, AdmissionReconciler } from "./admission/reconciler.js";
import { APP, type AppDeps, AppReconciler, appOfReplica } from "./app/reconciler.js";
import type { RemoteJobs } from "./cluster/dispatch.js";
import type { Fence } from "./cluster/fence.js";
import type { Fleet } from "./cluster/fleet.js";
import { clusterLoop } from "./cluster/reconciler.js";
import { type FleetOptions, fenceOf, fleetOf } from "./fleetwiring.js";
import { type FleetReplicas, withFleetReplicas } from "./inferenceservice/fleet.js";
import {
  INFERENCESERVICE,
  type InferenceServiceDeps,
  InferenceServiceReconciler,
  serviceOfReplica,
} from "./inferenceservice/reconciler.js";
import { ProjectReconciler } from "./project/reconciler.js";
import { type ModelRegistrar, SWEEP, SweepReconciler, type TrialMetrics } from "./sweep/reconciler.js";
import { TRAININGJOB, TrainingJobReconciler } from "./trainingjob/reconciler.js";
import { invalidSpec, validatingFor } from "./validate.js";
import {
  WORKSPACE,
  type WorkspaceDeps,
  WorkspaceReconciler,
  workspaceOfReplica,
} from "./workspace/reconciler.js";

type ControllerMetricsSet = ReturnType<typeof createControllerMetrics>;

/**
 * TrainingJob reconciles at once. Starting a job on Kubernetes is a few requests one after the
 * other (finalizer, pod, binding, event, status), each waiting on the API server and etcd: with 8
 * workers, 1,000 admitted jobs queued behind them for 30 s in bench:k8s while the API server had
 * room for more.
 */
const TRAININGJOB_WORKERS = 32;

export interface ControllerManagerDeps {
  store: ResourceStore;
  runtime: Runtime;
  scheduler: Scheduler;
  events: EventRecorder;
  log: Logger;
  metrics: Registry;
  now: () => Date;
  resyncMs?: number;
  /** Restart backoff of failed attempts (first delay). */
  baseBackoffMs?: number;
  /** Experiment tracking for workloads (embedded). */
  tracking?: WorkloadTracking;
  /** The project's models for workloads: OPENAI_BASE_URL and a key file (server/modelaccess.ts). */
  models?: WorkloadModels;
  /** Users' SSH keys: training jobs' workers and workspaces get their project's editors' as a file (loom ssh). */
  sshKeys?: Pick<SshKeyStore, "authorizedKeys">;
  /** Sweeps read trials' objectives here and register the best model here (embedded). */
  trialMetrics?: TrialMetrics;
  registrar?: ModelRegistrar;
  /** How often a running sweep reads its trials' metrics. */
  sweepPollMs?: number;
  /** Serving (InferenceService): where models are, what the autoscaler wants, who routes. */
  serving?: Pick<InferenceServiceDeps, "models" | "scale" | "table" | "builtinCommand" | "baseUrl">;
  /** Workspaces (run where the runtime can serve): the directory they publish to, their origin. */
  workspaces?: Pick<
    WorkspaceDeps,
    "directory" | "workspaceOrigin" | "ideActivity" | "gpuActivity" | "sshd" | "codeServer"
  >;
  /** Apps (run where the runtime can serve): the apps' serving table and autoscaler, their origin. */
  apps?: Pick<AppDeps, "scale" | "table" | "appOrigin">;
  /** Leases control planes renew here: copies they placed stop when theirs lapses (self-fencing). */
  fleetLeases?: FleetLeases;
  /** This platform's jobs' checkpoints as a control plane seeds them (a seeded copy waits for it). */
  memberCheckpoints?: MemberCheckpoints;
  /**
   * The fleet (issue 23): Cluster objects name members, reached through the connector with the
   * kubeconfigs the secret store holds; one queue places work over all of them. Absent: no
   * Cluster loop, one platform.
   */
  fleet?: FleetOptions;
}

/**
 * Wires informers to controllers. Platform-agnostic: the same manager runs embedded and as the
 * Kubernetes operator, with a different store and runtime in deps.
 */
export class ControllerManager {
  private readonly informers: Informer[] = [];
  private readonly controllers: Controller[] = [];
  private gcTimer: NodeJS.Timeout | undefined;
  private readonly tjInformer: Informer;
  private readonly projectInformer: Informer;
  private readonly admission: Controller;
  private readonly admissionReconciler: AdmissionReconciler;
  private isvcInformer: Informer | undefined;
  private sweepInformer: Informer | undefined;
  private services: Controller | undefined;
  private workspaceInformer: Informer | undefined;
  private workspaces: Controller | undefined;
  private appInformer: Informer | undefined;
  private apps: Controller | undefined;

  /** The fleet's members, where deps.fleet is given (views read capacity and logs through it). */
  readonly fleet: Fleet | undefined;
  private readonly remote: RemoteJobs | undefined;
  private readonly fence: Fence | undefined;
  /** InferenceService replicas in the fleet's members (the gateway reads their credentials here). */
  readonly fleetReplicas: FleetReplicas | undefined;

  constructor(private readonly deps: ControllerManagerDeps) {
    const metrics = createControllerMetrics(deps.metrics);
    const log = (name: string) => deps.log.child({ component: `controller/${name}` });
    const { fleet, remote, replicas, selfSeed } = fleetOf(deps, log("dispatch"));
    this.fleet = fleet;
    this.fleetReplicas = replicas;
    // A lapsed lease wakes the copies its control plane placed here (their loop stops them).
    const fence = fenceOf(
      deps,
      log("fence"),
      () => this.tjInformer.list(),
      (key) => jobs.enqueue(key),
    );
    this.fence = fence;
    // The job's loop writes the admission with the start: one status write per job fewer.
    const admissionReconciler = this.newAdmission(fleet, log("admission"), (job, offer) => {
      const key = displayKey(job.metadata);
      jobReconciler.offer(job, offer);
      // Admission's view of the job has the admission now: its write with the start calls for no cycle.
      this.admissionRelevant(key, { ...job, status: admittedStatus(job, offer) }, "MODIFIED");
      jobs.enqueue(key);
    });
    this.admissionReconciler = admissionReconciler;
    const admission = new Controller(admissionReconciler, log("admission"), metrics);
    // Every kind's loop validates first (validate.ts): a bad object is marked Failed/Invalid once.
    const validated = validatingFor(deps);
    const jobReconciler = new TrainingJobReconciler({
      ...deps,
      log: log("trainingjob"),
      baseBackoffMs: deps.baseBackoffMs,
      ...(remote ? { remote } : {}),
      ...(selfSeed ? { selfSeed } : {}),
      ...(fence ? { fence } : {}),
      cached: (key) => this.tjInformer.get(key) as TrainingJob | undefined,
    });
    const jobs = new Controller(
      validated(jobReconciler, TRAININGJOB, () => this.tjInformer, true),
      log("trainingjob"),
      metrics,
      TRAININGJOB_WORKERS,
    );
    // A change to a job's copy in a member (one watch per member) wakes the job here.
    remote?.watchCopies((key) => jobs.enqueue(key));
    this.remote = remote;
    const projects = new Controller(
      validated(new ProjectReconciler(deps.store, deps.runtime), "Project", () => this.projectInformer),
      log("project"),
      metrics,
    );
    const sweeps = new Controller(
      validated(
        new SweepReconciler({
          ...deps,
          log: log("sweep"),
          metrics: deps.trialMetrics,
          pollMs: deps.sweepPollMs,
        }),
        SWEEP,
        () => this.sweepInformer,
      ),
      log("sweep"),
      metrics,
      2,
    );
    this.controllers.push(admission, jobs, projects, sweeps);
    if (fleet) this.addClusterLoop(fleet, admission, metrics);
    this.addServices(validated, metrics, replicas);
    this.wireFleetReplicas(admission);
    // Both run wherever the runtime can serve: embedded, and the Kubernetes operator.
    if (deps.runtime.serving) {
      this.addWorkspaces(validated, metrics);
      this.addApps(validated, metrics);
    }
    this.admission = admission;
    const informerOpts = { resyncMs: deps.resyncMs };
    this.tjInformer = new Informer(
      storeSource(deps.store, TRAININGJOB),
      {
        onChange: (key, obj, type) => {
          const job = obj as TrainingJob | undefined;
          if (type === "DELETED" || !job || isFinished(job)) this.unfinishedJobs.delete(key);
          else this.unfinishedJobs.set(key, job);
          if (type === "RESYNC") {
            jobs.enqueueBackground(key);
            admission.enqueueBatched(ADMISSION_KEY); // nodes may have come or gone meanwhile
            return;
          }
          this.jobChanged({ key, job, type, jobReconciler, jobs, sweeps });
        },
      },
      log("informer"),
      metrics,
      informerOpts,
    );
    this.informers.push(this.tjInformer);
    this.projectInformer = new Informer(
      storeSource(deps.store, "Project"),
      {
        onChange: (key, _obj, type) => {
          if (type === "RESYNC") return projects.enqueueBackground(key);
          projects.enqueue(key);
          admission.enqueueBatched(ADMISSION_KEY); // quotas, limits and weights decide admission
        },
      },
      log("informer"),
      metrics,
      informerOpts,
    );
    this.informers.push(this.projectInformer);
    this.sweepInformer = new Informer(
      storeSource(deps.store, SWEEP),
      {
        onChange: (key, _obj, type) =>
          type === "RESYNC" ? sweeps.enqueueBackground(key) : sweeps.enqueue(key),
      },
      log("informer"),
      metrics,
      informerOpts,
    );
    this.informers.push(this.sweepInformer);
    // Pods submitted straight to Loom's scheduler, and node changes, call for a cycle too.
    deps.runtime.onCapacityChange?.(() => admission.enqueueBatched(ADMISSION_KEY));
    deps.runtime.onChange((ref) => {
      if (this.replicaChanged(ref)) return;
      // No admission cycle: capacity is counted by admissions, and whatever a worker's change
      // frees (a job finished, a victim stopped) comes through the job's own status write. A
      // cycle per worker event was thousands of cycles with nothing to decide in bench:k8s.
      const key = displayKey(ref);
      // The start this loop is making itself: it observes the gang right after.
      if (!jobReconciler.isStarting(key)) jobs.enqueue(key);
    });
  }

  /**
   * A serving replica started, got ready or exited: its owner looks again (replaces it, updates
   * readiness), a workspace's (NAME-wsHASH-rK) or a service's. False for other workloads.
   */
  private replicaChanged(ref: WorkloadRef): boolean {
    // Kubernetes labels a workspace's (an app's) pod with the Workspace (the App) itself.
    if (ref.kind === WORKSPACE) {
      this.workspaces?.enqueue(`${ref.project}/${ref.name}`);
      return true;
    }
    if (ref.kind === APP) {
      this.apps?.enqueue(`${ref.project}/${ref.name}`);
      return true;
    }
    if (ref.kind !== INFERENCESERVICE) return false;
    const workspace = workspaceOfReplica(ref.name);
    const app = workspace ? undefined : appOfReplica(ref.name);
    if (workspace) this.workspaces?.enqueue(`${ref.project}/${workspace}`);
    else if (app) this.apps?.enqueue(`${ref.project}/${app}`);
    else this.services?.enqueue(`${ref.project}/${serviceOfReplica(ref.name)}`);
    return true;
  }

  /** A fleet replica placed or freed wakes its service's loop; slots that come or go, the queue. */
  private wireFleetReplicas(admission: Controller): void {
    this.fleetReplicas?.onChange((key) => this.services?.enqueue(key));
    this.fleetReplicas?.onCapacityChange(() => admission.enqueueBatched(ADMISSION_KEY));
  }

  /** The admission loop's reconciler: one queue over this platform's nodes and the fleet's. */
  private newAdmission(
    fleet: Fleet | undefined,
    log: Logger,
    offer: (job: TrainingJob, offer: AdmissionOffer) => void,
  ): AdmissionReconciler {
    const { fleet: _members, ...deps } = this.deps;
    return new AdmissionReconciler({
      ...deps,
      ...(this.fleetReplicas ? { runtime: withFleetReplicas(deps.runtime, this.fleetReplicas) } : {}),
      ...(fleet ? { fleet } : {}),
      log,
      offer,
      listJobs: () => [...this.unfinishedJobs.values()],
      listProjects: () => this.projectInformer.list() as Project[],
    });
  }

  /** The Cluster loop (issue 23): members probed, their capacity handed to the one queue. */
  private addClusterLoop(fleet: Fleet, admission: Controller, metrics: ControllerMetricsSet): void {
    const { fleet: _f, ...deps } = this.deps;
    const log = this.deps.log.child({ component: "controller/cluster" });
    const loop = clusterLoop(
      {
        ...deps,
        fleet,
        log,
        ...(this.deps.fleet?.probeMs ? { probeMs: this.deps.fleet.probeMs } : {}),
        onCapacityChange: () => admission.enqueueBatched(ADMISSION_KEY),
        snapshot: () => this.admissionReconciler.snapshot(),
      },
      log,
      metrics,
      deps.resyncMs,
    );
    this.controllers.push(loop.controller);
    this.informers.push(loop.informer);
  }

  /** The Workspace loop and its informer: one replica each through the serving capability. */
  /** The InferenceService loop, where the runtime serves (deps.serving); its replicas may sit in the fleet's members. */
  private addServices(
    validated: ReturnType<typeof validatingFor>,
    metrics: ControllerMetricsSet,
    replicas: FleetReplicas | undefined,
  ): void {
    const deps = this.deps;
    if (!deps.serving) return;
    const log = deps.log.child({ component: "controller/inferenceservice" });
    const reconciler = new InferenceServiceReconciler({
      store: deps.store,
      runtime: deps.runtime,
      events: deps.events,
      log,
      now: deps.now,
      ...deps.serving,
      ...(replicas ? { fleet: replicas } : {}),
    });
    const services = new Controller(
      validated(reconciler, INFERENCESERVICE, () => this.isvcInformer),
      log,
      metrics,
      4,
    );
    this.controllers.push(services);
    this.isvcInformer = new Informer(
      storeSource(deps.store, INFERENCESERVICE),
      {
        onChange: (key, _obj, type) =>
          type === "RESYNC" ? services.enqueueBackground(key) : services.enqueue(key),
      },
      deps.log.child({ component: "controller/informer" }),
      metrics,
      { resyncMs: deps.resyncMs },
    );
    this.informers.push(this.isvcInformer);
    this.services = services;
  }

  private addWorkspaces(validated: ReturnType<typeof validatingFor>, metrics: ControllerMetricsSet) {
    const log = this.deps.log.child({ component: "controller/workspace" });
    const reconciler = new WorkspaceReconciler({
      store: this.deps.store,
      runtime: this.deps.runtime,
      events: this.deps.events,
      log,
      now: this.deps.now,
      ...(this.deps.models ? { models: this.deps.models } : {}),
      ...(this.deps.tracking ? { tracking: this.deps.tracking } : {}),
      ...(this.deps.sshKeys ? { sshKeys: this.deps.sshKeys } : {}),
      ...this.deps.workspaces,
    });
    const loop = this.addServedLoop(
      WORKSPACE,
      reconciler,
      log,
      validated,
      metrics,
      () => this.workspaceInformer,
    );
    this.workspaces = loop.controller;
    this.workspaceInformer = loop.informer;
  }

  /**
   * The App loop and its informer: revisions through the serving capability, as InferenceService's.
   * Without the apps' gateway (the operator without --data-dir) apps run at least one replica and
   * their status says why they do not scale to zero.
   */
  private addApps(validated: ReturnType<typeof validatingFor>, metrics: ControllerMetricsSet) {
    const log = this.deps.log.child({ component: "controller/app" });
    const reconciler = new AppReconciler({
      store: this.deps.store,
      runtime: this.deps.runtime,
      events: this.deps.events,
      log,
      now: this.deps.now,
      ...(this.deps.models ? { models: this.deps.models } : {}),
      ...(this.deps.tracking ? { tracking: this.deps.tracking } : {}),
      ...this.deps.apps,
    });
    const loop = this.addServedLoop(APP, reconciler, log, validated, metrics, () => this.appInformer);
    this.apps = loop.controller;
    this.appInformer = loop.informer;
  }

  /**
   * One served kind's loop (Workspace, App): a validating controller of two workers and an
   * informer of the kind that enqueues every change (resyncs in the background lane).
   */
  private addServedLoop(
    kind: string,
    reconciler: Reconciler,
    log: Logger,
    validated: ReturnType<typeof validatingFor>,
    metrics: ControllerMetricsSet,
    informer: () => Informer | undefined,
  ): { controller: Controller; informer: Informer } {
    const controller = new Controller(validated(reconciler, kind, informer), log, metrics, 2);
    this.controllers.push(controller);
    const inf = new Informer(
      storeSource(this.deps.store, kind),
      {
        onChange: (key, _obj, type) =>
          type === "RESYNC" ? controller.enqueueBackground(key) : controller.enqueue(key),
      },
      log,
      metrics,
      { resyncMs: this.deps.resyncMs },
    );
    this.informers.push(inf);
    return { controller, informer: inf };
  }

  /**
   * A job was added, changed or deleted: its loop, its sweep and the admission loop look again,
   * each only where the change is news to it.
   */
  private jobChanged(c: {
    key: string;
    job: TrainingJob | undefined;
    type: string;
    jobReconciler: TrainingJobReconciler;
    jobs: Controller;
    sweeps: Controller;
  }): void {
    const { key, job, type } = c;
    const admission = this.admissionReconciler;
    if (job && type === "MODIFIED") {
      // A store may deliver a write's event before the write's answer: wait for the answer.
      const replay = () => this.jobChanged(c);
      if (c.jobReconciler.holdEcho(key, replay) || admission.holdEcho(job, replay)) return;
    }
    // A loop's own write coming back through the watch calls for no reconcile by that loop: it
    // acted on that state when it wrote it. That was a reconcile per status write.
    const admissions = !!job && type === "MODIFIED" && admission.isOwnWrite(job);
    const own = !!job && type === "MODIFIED" && c.jobReconciler.isOwnWrite(key, job);
    // A waiting job's why (the admission loop's write) is nothing for the job's loop to do, nor
    // is a new job's arrival: the admission loop hands it over when it may start. A reconcile of
    // each (that returned at once) was one per job in bench:k8s. A bad spec still goes there.
    const waiting =
      !!job && type !== "DELETED" && c.jobReconciler.waitsForAdmission(key, job) && !invalidSpec(job);
    if (!own && !waiting && !(admissions && !job.status?.admission)) c.jobs.enqueue(key);
    // A trial changed: its sweep looks again (a trial finished, another may start).
    const sweep = job?.metadata.labels?.[SWEEP_LABEL];
    if (sweep) c.sweeps.enqueue(`${key.split("/")[0]}/${sweep}`);
    // Called even for the admission loop's own write, so that its view stays current.
    if (this.admissionRelevant(key, job, type) && !admissions) this.admission.enqueueBatched(ADMISSION_KEY);
  }

  /**
   * The informer's jobs that have not finished, kept as its events come: all that admission
   * looks at. A thousand finished jobs were walked by every admission cycle.
   */
  private readonly unfinishedJobs = new Map<string, TrainingJob>();

  /** What admission looks at, per job: a change elsewhere (pids, worker states) needs no cycle. */
  private readonly admissionView = new Map<string, string>();

  /**
   * Whether a change can alter a scheduling decision: a new or deleted job, a new spec, an
   * admission given or taken, a preemption asked, a job finished. Most writes (a worker's pid,
   * its state, a waiting job's condition) cannot, and a cycle per write was most of the
   * embedded server's CPU in bench:scheduler.
   */
  private admissionRelevant(key: string, job: TrainingJob | undefined, type: string): boolean {
    if (type === "DELETED" || !job) {
      this.admissionView.delete(key);
      return true;
    }
    const view = JSON.stringify([
      job.metadata.uid,
      job.metadata.generation,
      !!job.metadata.deletionTimestamp,
      !!job.status?.admission,
      !!job.status?.preemption,
      !!job.status?.resize,
      job.status?.phase === "Succeeded" || job.status?.phase === "Failed",
    ]);
    if (this.admissionView.get(key) === view) return false;
    this.admissionView.set(key, view);
    return true;
  }

  /** What the scheduler sees now: the views (`get nodes`, `top`, `--dry-run`) read the same. */
  schedulingSnapshot(): Promise<Snapshot> {
    return this.admissionReconciler.snapshot();
  }

  /** Asks the App loop to look at an app now (the apps' autoscaler changed its target). */
  enqueueApp(key: string): void {
    this.apps?.enqueue(key);
  }

  /** Asks the InferenceService loop to look at a service now (the autoscaler changed its target). */
  enqueueInferenceService(key: string): void {
    this.services?.enqueue(key);
  }

  async start(): Promise<void> {
    // The leases first: a copy whose control plane's lease is stale must not start in between.
    await this.fence?.start();
    for (const c of this.controllers) c.start();
    for (const i of this.informers) i.start();
    await Promise.all(this.informers.map((i) => i.waitForSync()));
    // One cycle at start: work that waits (pods submitted straight to the scheduler) may have
    // arrived before anything here listened.
    this.admission.enqueueBatched(ADMISSION_KEY);
    await this.collectGarbage();
    this.gcTimer = setInterval(() => void this.collectGarbage(), this.deps.resyncMs ?? 30_000);
    this.gcTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.gcTimer);
    this.remote?.close();
    this.fence?.stop();
    for (const i of this.informers) i.stop();
    await Promise.all(this.controllers.map((c) => c.stop()));
  }

  /** Stops and forgets runtime workloads whose object no longer exists (deleted while we were down). */
  private async collectGarbage(): Promise<void> {
    try {
      const live = new Set(this.tjInformer.list().map((o) => o.metadata.uid));
      // The fleet's checkpoints of jobs that are gone (a vault of its own: the operator's).
      await this.deps.fleet?.vault?.prune?.(live);
      // Workspaces run their replica through the serving capability too: theirs are not orphans.
      const services = new Set(
        [
          ...(this.isvcInformer?.list() ?? []),
          ...(this.workspaceInformer?.list() ?? []),
          ...(this.appInformer?.list() ?? []),
        ].map((o) => o.metadata.uid),
      );
      // Service replicas belong to the platform's serving capability, by revision: a revision
      // whose service is gone goes whole (Kubernetes collects its own through owner references).
      const serving = this.deps.runtime.serving;
      if (serving && (this.services || this.workspaces || this.apps)) {
        for (const { service, revision } of (await serving.listRevisions?.()) ?? []) {
          if (services.has(service.uid)) continue;
          await serving.deleteRevision(service, revision);
          this.deps.log.info(
            { revision, service: displayKey(service) },
            "deleting revision whose service is gone",
          );
        }
      }
      for (const ref of await this.deps.runtime.list()) {
        // Kubernetes labels a workspace's (an app's) pod with its object: a replica, as a service's are.
        if (ref.kind === INFERENCESERVICE || ref.kind === WORKSPACE || ref.kind === APP) {
          // Replicas are the serving capability's to stop; without it, model pods are the ones a
          // service of this uid made (Kubernetes labels them so).
          if (serving || !this.services || services.has(ref.uid)) continue;
        } else if (live.has(ref.uid)) continue;
        if (await this.deps.runtime.stop(ref, 10)) {
          await this.deps.runtime.release(ref);
          await this.deps.tracking?.revokeCredentials(ref);
          await this.deps.models?.revoke(ref);
          this.deps.log.info(
            { workload: displayKey(ref), uid: ref.uid },
            "released workload whose object is gone",
          );
        }
      }
    } catch (err) {
      this.deps.log.error({ err }, "garbage collection failed");
    }
  }
}

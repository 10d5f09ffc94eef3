import type { Duplex, Readable } from "node:stream";
import type {
  ExternalWork,
  GangObservation,
  GangSpec,
  LogOptions,
  MpiHost,
  Preparation,
  ProjectInfo,
  Runtime,
  WorkerEndpoint,
  WorkloadRef,
} from "../../ports/runtime.js";
import type { NodeCapacity, PodPlacement } from "../../ports/scheduler.js";
import type { LocalRevisions } from "./replicas.js";
import type { LocalRuntime } from "./runtime.js";

/**
 * The Runtime port on this machine: gangs are supervised process groups (LocalRuntime), and
 * service replicas are the `serving` capability (LocalRevisions), whose replicas reach the
 * scheduler as external work, the way `schedulerName: loom` pods do on Kubernetes.
 */
export class EmbeddedRuntime implements Runtime {
  constructor(
    private readonly processes: LocalRuntime,
    readonly serving: LocalRevisions,
  ) {}

  get mpiHost(): MpiHost {
    return this.processes.mpiHost;
  }

  nodes(): Promise<NodeCapacity[]> {
    return this.processes.nodes();
  }

  endpoints(ref: WorkloadRef, attempt: number, workers: number, ports: number): Promise<WorkerEndpoint[]> {
    return this.processes.endpoints(ref, attempt, workers, ports);
  }

  prepare(spec: Pick<GangSpec, "python">): Preparation {
    return this.processes.prepare(spec);
  }

  lastActivity(ref: WorkloadRef): Promise<Date | undefined> {
    return this.processes.lastActivity(ref);
  }

  start(spec: GangSpec, held?: Promise<unknown>): Promise<void> {
    return this.processes.start(spec, held);
  }

  observe(ref: WorkloadRef): Promise<GangObservation | undefined> {
    return this.processes.observe(ref);
  }

  stop(ref: WorkloadRef, graceSeconds: number): Promise<boolean> {
    return this.processes.stop(ref, graceSeconds);
  }

  release(ref: WorkloadRef): Promise<void> {
    return this.processes.release(ref);
  }

  list(): Promise<WorkloadRef[]> {
    return this.processes.list();
  }

  logs(ref: WorkloadRef, opts: LogOptions): Promise<Readable> {
    return this.processes.logs(ref, opts);
  }

  listeningPorts(ref: WorkloadRef, worker?: number): Promise<number[]> {
    return this.processes.listeningPorts(ref, worker);
  }

  connectPort(ref: WorkloadRef, worker: number, port: number): Promise<Duplex> {
    return this.processes.connectPort(ref, worker, port);
  }

  ensureProject(project: ProjectInfo): Promise<void> {
    return this.processes.ensureProject(project);
  }

  removeProject(name: string): Promise<void> {
    return this.processes.removeProject(name);
  }

  onChange(listener: (ref: WorkloadRef) => void): void {
    this.processes.onChange(listener);
    this.serving.onChange(listener);
  }

  external(): ExternalWork {
    return this.serving.external();
  }

  bindExternal(id: string, placements: PodPlacement[]): Promise<void> {
    return this.serving.bind(id, placements);
  }

  explainExternal(id: string, _reason: string, message: string): Promise<void> {
    return this.serving.explain(id, message);
  }

  preemptExternal(id: string, message: string): Promise<void> {
    return this.serving.preempt(id, message);
  }

  onCapacityChange(listener: () => void): void {
    this.serving.onCapacityChange(listener);
  }

  async close(): Promise<void> {
    await this.serving.close();
    await this.processes.close();
  }
}

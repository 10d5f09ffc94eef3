import { describe, expect, it } from "vitest";
import { completionOf, planGang, portsPerWorker } from "./frameworks.js";

const mpiHost = { command: ["sshd"], env: { X: "1" } };
const endpoints = (n: number, ports = 1) =>
  Array.from({ length: n }, (_, i) => ({
    host: `job-${i}.job`,
    ports: Array.from({ length: ports }, (_, j) => 29500 + j),
  }));
const spec = (over: Record<string, unknown> = {}) => ({
  framework: "none" as const,
  procsPerWorker: 1,
  command: ["python3", "train.py"],
  ...over,
});

describe("planGang", () => {
  it("none: index, size and the peer list", () => {
    const plan = planGang(spec(), { rendezvousId: "r-a1", endpoints: endpoints(2), mpiHost });
    expect(plan.completion).toBe("all");
    expect(plan.workers[1]).toEqual({
      index: 1,
      command: ["python3", "train.py"],
      env: {
        LOOM_WORKER_INDEX: "1",
        LOOM_WORKERS: "2",
        LOOM_PEERS: "job-0.job:29500,job-1.job:29500",
        LOOM_RENDEZVOUS_ID: "r-a1",
      },
    });
  });

  it("pytorch: what torch.distributed's env:// reads, rank per worker", () => {
    const plan = planGang(spec({ framework: "pytorch" }), {
      rendezvousId: "r",
      endpoints: endpoints(3),
      mpiHost,
    });
    expect(plan.workers.map((w) => w.env.RANK)).toEqual(["0", "1", "2"]);
    expect(plan.workers[2]!.env).toMatchObject({
      MASTER_ADDR: "job-0.job",
      MASTER_PORT: "29500",
      WORLD_SIZE: "3",
      NODE_RANK: "2",
      LOCAL_RANK: "0",
      LOCAL_WORLD_SIZE: "1",
    });
  });

  it("pytorch with torchrun: static rendezvous on worker 0, node rank per worker, no restarts of its own", () => {
    const plan = planGang(spec({ framework: "pytorch", launcher: "torchrun", procsPerWorker: 4 }), {
      rendezvousId: "r-a2",
      endpoints: endpoints(2),
      mpiHost,
    });
    const cmd = plan.workers[1]!.command;
    expect(cmd.slice(0, 3)).toEqual(["python3", "-m", "torch.distributed.run"]);
    expect(cmd).toEqual(
      expect.arrayContaining([
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=4",
        "--rdzv_backend=static",
        "--rdzv_endpoint=job-0.job:29500",
        "--rdzv_id=r-a2",
        "--max_restarts=0",
      ]),
    );
    expect(cmd.slice(-3)).toEqual(["--no_python", "python3", "train.py"]);
    expect(plan.workers[1]!.env.WORLD_SIZE).toBe("8");
    expect(plan.workers[1]!.env.RANK).toBeUndefined(); // torchrun numbers its processes
  });

  it("tensorflow: TF_CONFIG with the cluster and this task", () => {
    const plan = planGang(spec({ framework: "tensorflow" }), {
      rendezvousId: "r",
      endpoints: endpoints(2),
      mpiHost,
    });
    expect(JSON.parse(plan.workers[1]!.env.TF_CONFIG!)).toEqual({
      cluster: { worker: ["job-0.job:29500", "job-1.job:29500"] },
      task: { type: "worker", index: 1 },
    });
  });

  it("mpi: worker 0 launches over a hostfile of every slot; the rest are the platform's hosts", () => {
    const plan = planGang(spec({ framework: "mpi", procsPerWorker: 2 }), {
      rendezvousId: "r",
      endpoints: endpoints(2),
      mpiHost,
    });
    expect(plan.completion).toBe("leader");
    expect(plan.workers[0]!.env.LOOM_MPI_HOSTFILE_CONTENT).toBe("job-0.job\njob-0.job\njob-1.job\njob-1.job");
    expect(plan.workers[0]!.command[2]).toMatch(/exec mpirun --hostfile "\$hostfile" -np 4 "\$@"/);
    expect(plan.workers[0]!.command.slice(-2)).toEqual(["python3", "train.py"]);
    expect(plan.workers[1]!.command).toEqual(["sshd"]);
    expect(plan.workers[1]!.env.X).toBe("1");
  });

  it("ray: a head that runs the entrypoint, workers that join it; distinct ports per node", () => {
    expect(portsPerWorker("ray")).toBe(6);
    const eps = [
      { host: "127.0.0.1", ports: [1, 2, 3, 4, 5, 6] },
      { host: "127.0.0.1", ports: [7, 8, 9, 10, 11, 12] },
    ];
    const plan = planGang(spec({ framework: "ray" }), { rendezvousId: "r", endpoints: eps, mpiHost });
    expect(completionOf("ray")).toBe("leader");
    expect(plan.workers[0]!.command[2]).toMatch(/ray start --head --block --port=1 /);
    expect(plan.workers[0]!.command[2]).not.toMatch(/ray stop/);
    expect(plan.workers[1]!.command[2]).toMatch(
      /ray start --block --address=127\.0\.0\.1:1 --node-manager-port=7 --object-manager-port=8/,
    );
    expect(plan.workers[1]!.env.RAY_ADDRESS).toBe("127.0.0.1:1");
  });
});

"""A tiny model trained a few steps: in the notebook (train.ipynb) first, then as a gang.

    python train.py --steps 50                               # in the workspace's terminal
    loom run --from ws/NAME --workers 2 -- python train.py   # the same code, 2 workers

Under Loom every worker has RANK/WORLD_SIZE/MASTER_ADDR (framework pytorch, the default of
`loom run`), LOOM_CHECKPOINT_DIR, and MLFLOW_TRACKING_URI with a run of the job's own: metrics go
to tracking with no configuration. In the notebook (no WORLD_SIZE) it is a single process, and
logs to the experiment `notebook` with no configuration either (a workspace has
MLFLOW_TRACKING_URI and its own credential too).
"""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=50)
p.add_argument("--lr", type=float, default=0.05)
args = p.parse_args()

world = int(os.environ.get("WORLD_SIZE", "1"))
rank = int(os.environ.get("RANK", "0"))
if world > 1:
    dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
if world > 1:
    model = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=args.lr)
true_w = torch.arange(8, dtype=torch.float32) / 8

mlflow = None
if rank == 0 and os.environ.get("MLFLOW_TRACKING_URI"):
    try:
        import mlflow  # a job's run is set up by Loom (MLFLOW_RUN_ID): start_run resumes it

        if not os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("MLFLOW_EXPERIMENT_NAME"):
            mlflow.set_experiment("notebook")  # in a workspace: Loom gives the URI and credential only
        mlflow.start_run()
    except ImportError:
        mlflow = None

for step in range(1, args.steps + 1):
    g = torch.Generator().manual_seed(step * 1000 + rank)  # each rank its own batch
    x = torch.randn(64, 8, generator=g)
    y = (x @ true_w).unsqueeze(1)
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if rank == 0 and (step % 10 == 0 or step == args.steps):
        print(f"step {step} loss {loss.item():.5f} (world {world})", flush=True)
        if mlflow:
            mlflow.log_metric("loss", loss.item(), step=step)

if rank == 0:
    ckpt = os.environ.get("LOOM_CHECKPOINT_DIR", "checkpoints")
    os.makedirs(ckpt, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(ckpt, "model.pt"))
if mlflow:
    mlflow.end_run()
if world > 1:
    dist.destroy_process_group()

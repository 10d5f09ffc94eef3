"""Pretrain a tiny GPT-style character-level language model with DistributedDataParallel (gloo on CPUs; --device cuda: NCCL on GPUs).

Runs under Loom or plain torchrun:
    torchrun --nnodes 1 --nproc_per_node 2 examples/pretrain/train.py --steps 200

Contract
- Process group from env:// (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK). WORLD_SIZE unset or 1:
  a single process, no process group.
- LOOM_CHECKPOINT_DIR (default ./checkpoints) outlives attempts. Rank 0 writes ckpt.pt (model,
  optimizer, step, loss) every --checkpoint-every steps, at the end, and on SIGTERM, then
  loom.json {"step", "loss"}; both atomically (tmp file + os.replace). Every rank resumes from
  ckpt.pt when it exists.
- Deterministic: the model is initialised from --seed; the batch of (step, rank) is a pure function
  of (seed, step, rank); no dropout; one thread per process. An interrupted-and-resumed run ends
  with the same final loss as an uninterrupted one.
- SIGTERM (or SIGINT) sets a flag; every step ends with one all_reduce that carries it, so all
  ranks stop after the same step. Rank 0 checkpoints that step, then every rank exits 128+signal
  (143 for SIGTERM) without touching the process group again. A signal during the last step
  does not stop anything: the run finishes and exits 0.
- Rank 0 prints `step N loss X` every --log-every steps and finally
  `FINAL step=<steps> loss=<mean loss of the last step over all ranks, 6 decimals>`.
- --hold-file NAME (for tests): every rank waits before the last step until NAME exists in
  LOOM_CHECKPOINT_DIR, so a run a test interrupts is still running when it does, however slow
  the machine; a SIGTERM meanwhile stops it as during a step (rank 0 checkpoints, exit 143).
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ left next to the example in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import make_corpus  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="total optimizer steps")
    p.add_argument("--checkpoint-every", type=int, default=20, help="rank 0 checkpoints every K steps (0: only at the end and on SIGTERM)")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per rank per step")
    p.add_argument("--context", type=int, default=64, help="characters per sequence")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=10, help="linear learning-rate warmup steps")
    p.add_argument("--step-sleep", type=float, default=0.0, help="artificial delay per step, seconds (for tests)")
    p.add_argument("--hold-file", default=None, help="wait before the last step until this file exists in the checkpoint directory (for tests)")
    p.add_argument("--corpus-chars", type=int, default=200_000)
    p.add_argument("--dist-timeout", type=float, default=300.0, help="seconds a rendezvous or collective may wait for a peer")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: this rank's GPU (LOCAL_RANK among the visible ones)")
    p.add_argument("--backend", choices=["gloo", "nccl"], default=None, help="process group backend (default: nccl on cuda, gloo on cpu)")
    p.add_argument("--timing-warmup", type=int, default=10, help="steps left out of the STEPTIME mean (start-up, CUDA warm-up)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Model: a minimal GPT (pre-LayerNorm blocks, causal self-attention, no dropout).


class Block(nn.Module):
    def __init__(self, d_model, heads, context):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        # A plain attribute, not a buffer: DDP broadcasts buffers, and gloo cannot broadcast bool.
        self.mask = torch.tril(torch.ones(context, context, dtype=torch.bool)).view(1, 1, context, context)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab, context, d_model, layers, heads):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, heads, context) for _ in range(layers)])
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def to_device(self, device):
        """Module.to plus the blocks' masks, which are plain attributes (see Block) that .to skips."""
        self.to(device)
        for b in self.blocks:
            b.mask = b.mask.to(device)
        return self

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        logits = self.head(self.ln(self.blocks(x)))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------
# Data: the batch of (seed, step, rank) depends on nothing else, so a resumed run sees the same.


def batch_seed(seed, step, rank):
    digest = hashlib.sha256(f"pretrain:{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def get_batch(data, seed, step, rank, batch_size, context):
    g = torch.Generator().manual_seed(batch_seed(seed, step, rank))
    starts = torch.randint(0, data.numel() - context - 1, (batch_size,), generator=g)
    offsets = torch.arange(context + 1)
    chunk = data[starts.unsqueeze(1) + offsets]  # (batch, context + 1)
    return chunk[:, :-1], chunk[:, 1:]


# ---------------------------------------------------------------------------------------------
# Checkpoints: written by rank 0 only, atomically; ckpt.pt first so loom.json never runs ahead.


def _atomic_write(path, write):
    tmp = path + ".tmp"  # one writer (rank 0); a leftover from a killed writer is overwritten
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir, model, optimizer, step, loss, config):
    os.makedirs(ckpt_dir, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "loss": loss, "config": config}
    _atomic_write(os.path.join(ckpt_dir, "ckpt.pt"), lambda f: torch.save(state, f))
    meta = json.dumps({"step": step, "loss": loss}).encode()
    _atomic_write(os.path.join(ckpt_dir, "loom.json"), lambda f: f.write(meta))


def load_checkpoint(ckpt_dir):
    path = os.path.join(ckpt_dir, "ckpt.pt")
    if not os.path.exists(path):
        return None
    return torch.load(path, map_location="cpu")


# ---------------------------------------------------------------------------------------------


STOP_SIGNAL = 0  # set by the handler; read once per step


def _on_signal(signum, _frame):
    global STOP_SIGNAL
    if not STOP_SIGNAL:
        STOP_SIGNAL = signum


def hold(path, step, log):
    """--hold-file: waits until path exists; True if a stop signal came first."""
    log(f"holding before step {step + 1} until {path} exists")
    said = time.time()
    while not os.path.exists(path):
        if STOP_SIGNAL:
            return True
        time.sleep(0.1)
        if time.time() - said >= 60:  # a line now and then: a held run is not a hung one
            log(f"still holding before step {step + 1}")
            said = time.time()
    return False


def stop_now(step, is_main, save, log):
    """Rank 0 checkpoints the step, then every rank exits 128+signal without another collective."""
    if is_main:
        save()
    signum = STOP_SIGNAL or signal.SIGTERM  # a rank that got no signal itself exits as if SIGTERM
    log(f"checkpointed at step {step} on {signal.Signals(signum).name}")
    sys.stdout.flush()
    # Leave without another collective: the peers are exiting too.
    os._exit(128 + int(signum))


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    torch.set_num_threads(1)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    distributed = world > 1
    if args.device == "cuda":
        # Each worker sees only its own devices (CUDA_VISIBLE_DEVICES): local rank k takes the k-th.
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = args.backend or ("nccl" if device.type == "cuda" else "gloo")
    if distributed:
        dist.init_process_group(backend, init_method="env://", world_size=world, rank=rank,
                                timeout=datetime.timedelta(seconds=args.dist_timeout))
    is_main = rank == 0
    ckpt_dir = os.environ.get("LOOM_CHECKPOINT_DIR") or "./checkpoints"

    def log(*a):
        if is_main:
            print(*a, flush=True)

    text = make_corpus(args.corpus_chars)
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)

    config = {"vocab": len(chars), "context": args.context, "d_model": args.d_model,
              "layers": args.layers, "heads": args.heads}
    torch.manual_seed(args.seed)
    model = TinyGPT(config["vocab"], args.context, args.d_model, args.layers, args.heads).to_device(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)

    start_step, last_loss = 0, float("nan")
    ckpt = load_checkpoint(ckpt_dir)
    if ckpt is not None:
        if ckpt["config"] != config:
            raise SystemExit(f"checkpoint in {ckpt_dir} is for model {ckpt['config']}, not {config}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step, last_loss = ckpt["step"], ckpt["loss"]
        del ckpt
    if distributed:
        # Every rank must run the same steps, or collectives pair up wrong: check they agree.
        s = torch.tensor([start_step, -start_step], dtype=torch.float64, device=device)
        dist.all_reduce(s, op=dist.ReduceOp.MAX)
        if s[0].item() != -s[1].item():
            raise SystemExit(f"rank {rank} would resume from step {start_step}, another rank from "
                             f"{int(s[0].item())}: is {ckpt_dir} shared by all workers?")
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp = model

    n_params = sum(p.numel() for p in model.parameters())
    log(f"world {world}, {len(text)} chars corpus, vocab {len(chars)}, {n_params} params, "
        f"checkpoints in {ckpt_dir}" + (f", on {device} ({backend})" if device.type == "cuda" else ""))
    if start_step:
        log(f"resumed from step {start_step}")

    model.train()
    step = start_step
    t0 = time.time()
    timed_from, timed_t0 = None, None  # STEPTIME: steps after --timing-warmup, wall clock
    save = lambda: save_checkpoint(ckpt_dir, model, optimizer, step, last_loss, config)  # noqa: E731
    while step < args.steps:
        if args.hold_file and step == args.steps - 1 and hold(os.path.join(ckpt_dir, args.hold_file), step, log):
            stop_now(step, is_main, save, log)
        step += 1
        lr = args.lr * min(1.0, step / max(1, args.warmup))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if timed_from is None and step > start_step + args.timing_warmup:
            timed_from, timed_t0 = step, time.time()
        x, y = get_batch(data, args.seed, step, rank, args.batch_size, args.context)
        x, y = x.to(device), y.to(device)
        loss = ddp(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages gradients across ranks here
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if args.step_sleep > 0:
            time.sleep(args.step_sleep)

        # One collective per step carries both the loss (summed, then averaged) and the stop flag
        # (summed: non-zero on any rank means stop; the same as a MAX), so every rank sees the same.
        # loss.item() waits for the step's GPU work, so the wall clock times whole steps.
        stats = torch.tensor([loss.item(), float(STOP_SIGNAL)], dtype=torch.float64, device=device)
        if distributed:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        last_loss = stats[0].item() / world
        stop = stats[1].item() > 0 and step < args.steps

        if step % args.log_every == 0 or step == args.steps:
            log(f"step {step} loss {last_loss:.4f} ({(time.time() - t0) / (step - start_step):.3f}s/step)")
        periodic = args.checkpoint_every > 0 and step % args.checkpoint_every == 0
        if stop:
            stop_now(step, is_main, save, log)
        if is_main and (periodic or step == args.steps):
            save()

    if timed_from is not None:
        log(f"STEPTIME mean_s={(time.time() - timed_t0) / (step - timed_from + 1):.6f} steps={step - timed_from + 1}")
    log(f"FINAL step={step} loss={last_loss:.6f}")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

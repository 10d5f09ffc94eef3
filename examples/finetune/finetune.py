"""Fine-tune the pretrained tiny GPT of examples/pretrain with LoRA adapters (one process, CPU).

Run by a Loom Sweep (examples/finetune/sweep.yaml), one trial per TrainingJob, or by hand:
    LOOM_INIT_CHECKPOINT_DIR=/tmp/pretrain python3 examples/finetune/finetune.py --lr 3e-3

Contract
- Hyperparameters: env LR (3e-3), LORA_RANK (4), STEPS (60), EVAL_EVERY (5), SEED (1). Each is
  also a flag (--lr, --lora-rank, --steps, --eval-every, --seed) whose default is read from the
  environment, so a flag given on the command line wins over the environment.
- The base model: LOOM_INIT_CHECKPOINT_DIR (or --init-checkpoint-dir) must hold the ckpt.pt that
  examples/pretrain/train.py writes; the model class is imported from there. Missing: exit 2.
- Task: a generated "harbour log" corpus (different words and sentence shapes from pretraining,
  same characters), deterministic; the last 10% is held out. Base weights are frozen; LoRA
  adapters (rank r, alpha 2r) on every block's qkv, proj and both MLP linears are trained.
- Every EVAL_EVERY steps (and at step 0 of a fresh run and at the last step) the loss on one
  fixed held-out batch (the same for every trial) is printed as `step N val_loss X train_loss Y`
  and logged as mlflow metrics val_loss and train_loss (the loss of that step's batch) with
  step=N; finally `FINAL val_loss=X` (6 decimals).
- MLflow: only when mlflow imports and MLFLOW_TRACKING_URI is set. mlflow.start_run() resumes
  the run in MLFLOW_RUN_ID. Params lr, lora_rank, steps, eval_every, seed are logged unless the
  run already has them. A tracking error is printed and turns tracking off; it never stops
  training.
- LOOM_CHECKPOINT_DIR (default ./checkpoints): lora.pt (adapters, optimizer, step, ...) every 20
  steps, at the end and on SIGTERM/SIGINT, then loom.json {"step", "loss", "val_loss"}; both
  atomically. A new attempt resumes from lora.pt; a lora.pt made with another LORA_RANK, LR, SEED
  or base model is refused (exit 2).
- SIGTERM/SIGINT: finish the current step, checkpoint, exit 128+signal (143). A signal during the
  last step or afterwards does not stop the run.
- Success: the merged model (base + B@A*alpha/r, a TinyGPT state_dict in model.pt) and
  config.json go to the run's artifacts under "model" (runs:/<run_id>/model) and to
  $LOOM_CHECKPOINT_DIR/model/.
- Deterministic given (SEED, LR, LORA_RANK, STEPS, base checkpoint): one thread, the adapter init
  and the batch of each step depend only on SEED (and the step); no dropout. A killed-and-resumed
  run ends with the same FINAL val_loss as one that is not.
"""
import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time

import torch
import torch.nn as nn

sys.dont_write_bytecode = True  # no __pycache__ left next to the examples in the checkout

HERE = os.path.dirname(os.path.abspath(__file__))
PRETRAIN_DIR = os.path.join(os.path.dirname(HERE), "pretrain")


def _import_pretrain():
    """examples/pretrain/train.py as a module (it puts its own dir on sys.path for corpus.py)."""
    sys.path.insert(0, PRETRAIN_DIR)
    spec = importlib.util.spec_from_file_location("loom_pretrain_train", os.path.join(PRETRAIN_DIR, "train.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pretrain = _import_pretrain()
from corpus import make_corpus  # noqa: E402  (examples/pretrain/corpus.py)


def _env(name, default):
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lr", type=float, default=_env("LR", "3e-3"), help="learning rate (env LR)")
    p.add_argument("--lora-rank", type=int, default=_env("LORA_RANK", "4"), help="adapter rank (env LORA_RANK)")
    p.add_argument("--steps", type=int, default=_env("STEPS", "60"), help="optimizer steps (env STEPS)")
    p.add_argument("--eval-every", type=int, default=_env("EVAL_EVERY", "5"), help="eval interval (env EVAL_EVERY)")
    p.add_argument("--seed", type=int, default=_env("SEED", "1"), help="adapter init and batches (env SEED)")
    p.add_argument("--init-checkpoint-dir", default=_env("LOOM_INIT_CHECKPOINT_DIR", None),
                   help="directory with the pretrained ckpt.pt (env LOOM_INIT_CHECKPOINT_DIR)")
    p.add_argument("--checkpoint-dir", default=_env("LOOM_CHECKPOINT_DIR", "./checkpoints"),
                   help="where adapters are checkpointed (env LOOM_CHECKPOINT_DIR)")
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--context", type=int, default=48, help="characters per training sequence")
    p.add_argument("--step-sleep", type=float, default=0.0, help="artificial delay per step, seconds (for tests)")
    args = p.parse_args(argv)
    if args.lora_rank < 1 or args.steps < 0 or args.eval_every < 1 or args.checkpoint_every < 0:
        p.error("need --lora-rank >= 1, --steps >= 0, --eval-every >= 1, --checkpoint-every >= 0")
    return args


# ---------------------------------------------------------------------------------------------
# The fine-tuning domain: terse harbour-master log entries. Other words, other sentence shapes
# than the pretraining corpus, but only characters of its vocabulary (checked).

FT_CORPUS_SEED = 777
VAL_SEED = 4242  # the held-out batch is the same for every trial

_TIMES = ["Morning", "Noon", "Evening", "Midnight", "At first light", "Afternoon", "Towards dusk"]
_DIRS = ["north", "east", "south", "west", "northeast", "southwest"]
_WIND = ["calm", "light", "fresh", "strong", "gusting", "steady"]
_SEA = ["glassy", "calm", "choppy", "rough", "heavy", "slight"]
_SKY = ["clear", "overcast", "fog on the point", "rain showers", "low cloud", "bright"]
_CREW = ["Mira", "Tolan", "Ostra", "Noor", "Vela", "Juno", "Orrin", "Tamsin", "Anselm", "Bria", "Eska"]
_COUNT = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
_CARGO = ["barrels of oil", "crates of salt", "nets of herring", "sacks of grain", "bolts of cloth",
          "casks of cider", "coils of rope", "bales of wool"]
_PLACE = ["the north pier", "the old quay", "the east dock", "the breakwater", "the fish market", "berth nine"]
_VESSEL = ["the Marigold", "the Osprey", "the Tern", "the Bittern", "the Albatross", "the Vixen"]
_NOTES = ["All hands well.", "No ships sighted.", "Barometer falling.", "Barometer steady.",
          "The quay lamps are lit.", "Tide turning.", "A pilot boat went out.", "Nothing further to report."]


def _entry(r):
    s = f"{r.choice(_TIMES)}. Tide log, wind {r.choice(_DIRS)} {r.choice(_WIND)}, sea {r.choice(_SEA)}, sky {r.choice(_SKY)}."
    for _ in range(r.randint(1, 2)):
        if r.random() < 0.5:
            s += f" {r.choice(_CREW)} logs {r.choice(_COUNT)} {r.choice(_CARGO)} at {r.choice(_PLACE)}."
        else:
            verb = r.choice(["In", "Out"])
            s += f" {verb}, {r.choice(_VESSEL)}, {r.choice(_COUNT)} crew, {r.choice(_PLACE)}."
    if r.random() < 0.5:
        s += " " + r.choice(_NOTES)
    return s


def make_domain_corpus(n_chars=60_000, seed=FT_CORPUS_SEED):
    r = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        line = _entry(r)
        out.append(line)
        size += len(line) + 1
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# LoRA


class LoRALinear(nn.Module):
    """y = base(x) + (x A^T B^T) * alpha/r, base frozen; B starts at zero so step 0 is the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.scale = alpha / rank
        bound = 1.0 / math.sqrt(base.in_features)  # as PEFT's kaiming_uniform_(a=sqrt(5))
        a = (torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged_weight(self):
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scale


LORA_TARGETS = ("qkv", "proj", "mlp.0", "mlp.2")  # in every block


def add_lora(model, rank, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for bi, block in enumerate(model.blocks):
        for name in LORA_TARGETS:
            parent, attr = (block.mlp, int(name[-1])) if name.startswith("mlp.") else (block, name)
            base = parent[attr] if isinstance(attr, int) else getattr(parent, attr)
            lora = LoRALinear(base, rank, alpha, g)
            if isinstance(attr, int):
                parent[attr] = lora
            else:
                setattr(parent, attr, lora)
            wrapped[f"blocks.{bi}.{name}"] = lora
    return wrapped


def lora_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def merged_state_dict(model, wrapped):
    """The model as a plain TinyGPT state_dict, adapters merged into the base weights."""
    out = {}
    for k, v in model.state_dict().items():
        if "lora_" in k:
            continue
        out[k.replace(".base.", ".")] = v.detach().clone()
    for prefix, lora in wrapped.items():
        out[f"{prefix}.weight"] = lora.merged_weight().detach().clone()
    return out


# ---------------------------------------------------------------------------------------------
# Data


def step_seed(seed, step):
    digest = hashlib.sha256(f"finetune:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_batch(data, generator, batch_size, context):
    starts = torch.randint(0, data.numel() - context - 1, (batch_size,), generator=generator)
    chunk = data[starts.unsqueeze(1) + torch.arange(context + 1)]
    return chunk[:, :-1], chunk[:, 1:]


# ---------------------------------------------------------------------------------------------
# Tracking: optional; any error turns it off and training goes on.


class Tracker:
    def __init__(self):
        self.mlflow = None
        self.run_id = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            print("tracking: MLFLOW_TRACKING_URI is not set; metrics are only printed", flush=True)
            return
        try:
            import mlflow
        except Exception as e:  # noqa: BLE001
            print(f"tracking: cannot import mlflow ({e}); metrics are only printed", flush=True)
            return
        try:
            run = mlflow.start_run()  # resumes MLFLOW_RUN_ID when the platform set it
            self.mlflow, self.run_id = mlflow, run.info.run_id
            print(f"tracking: run {self.run_id} at {mlflow.get_tracking_uri()}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"tracking: could not start the run ({e}); metrics are only printed", flush=True)

    def _call(self, what, fn):
        if self.mlflow is None:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            print(f"tracking: {what} failed ({e}); tracking is off for the rest of this attempt", flush=True)
            self.mlflow = None

    def log_params(self, params):
        def do():
            have = self.mlflow.get_run(self.run_id).data.params
            new = {}
            for k, v in params.items():
                if k not in have:
                    new[k] = v
                elif not _same_param(have[k], v):
                    print(f"tracking: run already has param {k}={have[k]!r}, not {v!r}; left as it is", flush=True)
            if new:
                self.mlflow.log_params(new)
        self._call("log_params", do)

    def log_metrics(self, metrics, step):
        self._call("log_metrics", lambda: self.mlflow.log_metrics(metrics, step=step))

    def log_artifacts(self, local_dir, artifact_path):
        self._call("log_artifacts", lambda: self.mlflow.log_artifacts(local_dir, artifact_path=artifact_path))

    def end(self, status):
        self._call("end_run", lambda: self.mlflow.end_run(status=status))


def _same_param(a, b):
    if str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _atomic_write(path, write):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir, model, optimizer, step, train_loss, val_loss, ident):
    os.makedirs(ckpt_dir, exist_ok=True)
    state = {"lora": lora_state(model), "optimizer": optimizer.state_dict(), "step": step,
             "train_loss": train_loss, "val_loss": val_loss, "ident": ident}
    _atomic_write(os.path.join(ckpt_dir, "lora.pt"), lambda f: torch.save(state, f))
    meta = json.dumps({"step": step, "loss": train_loss, "val_loss": val_loss}).encode()
    _atomic_write(os.path.join(ckpt_dir, "loom.json"), lambda f: f.write(meta))


def write_model_dir(path, state_dict, config):
    os.makedirs(path, exist_ok=True)
    torch.save(state_dict, os.path.join(path, "model.pt"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


STOP_SIGNAL = 0


def _on_signal(signum, _frame):
    global STOP_SIGNAL
    if not STOP_SIGNAL:
        STOP_SIGNAL = signum


def die(msg, code=2):
    print(f"finetune: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def load_base(init_dir):
    path = os.path.join(init_dir, "ckpt.pt") if init_dir else None
    if not path or not os.path.isfile(path):
        where = f"{path} does not exist" if path else "LOOM_INIT_CHECKPOINT_DIR is not set"
        die(f"no pretrained model: {where}.\n"
            "  Run examples/pretrain first, e.g.\n"
            "    LOOM_CHECKPOINT_DIR=/tmp/pretrain python3 examples/pretrain/train.py\n"
            "  then LOOM_INIT_CHECKPOINT_DIR=/tmp/pretrain (or --init-checkpoint-dir /tmp/pretrain).\n"
            "  Under Loom the sweep's template points LOOM_INIT_CHECKPOINT_DIR at the pretrain job's\n"
            "  checkpoint (loom apply -f examples/pretrain/pretrain.yaml, and let it finish, first).")
    return torch.load(path, map_location="cpu")


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    torch.set_num_threads(1)
    t_start = time.time()

    base = load_base(args.init_checkpoint_dir)
    ckpt_dir = args.checkpoint_dir
    if os.path.realpath(ckpt_dir) == os.path.realpath(args.init_checkpoint_dir):
        die(f"LOOM_CHECKPOINT_DIR and LOOM_INIT_CHECKPOINT_DIR are both {ckpt_dir}: "
            "fine-tuning would overwrite the pretrain job's loom.json")
    cfg = base["config"]

    # The pretraining vocabulary: train.py's corpus with its default size (all 40 characters).
    chars = sorted(set(make_corpus()))
    if len(chars) != cfg["vocab"]:
        die(f"the base model has vocab {cfg['vocab']}, the pretraining corpus {len(chars)} characters")
    stoi = {ch: i for i, ch in enumerate(chars)}
    text = make_domain_corpus()
    bad = sorted(set(text) - set(stoi))
    assert not bad, f"fine-tuning corpus uses characters the base model does not know: {bad}"
    data = torch.tensor([stoi[ch] for ch in text], dtype=torch.long)
    split = int(len(data) * 0.9)
    train_data, val_data = data[:split], data[split:]
    context = min(args.context, cfg["context"])
    val_x, val_y = sample_batch(val_data, torch.Generator().manual_seed(VAL_SEED), 16, cfg["context"])

    model = pretrain.TinyGPT(cfg["vocab"], cfg["context"], cfg["d_model"], cfg["layers"], cfg["heads"])
    model.load_state_dict(base["model"])
    rank, alpha = args.lora_rank, 2.0 * args.lora_rank
    wrapped = add_lora(model, rank, alpha, step_seed(args.seed, -1))
    trainable = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)

    ident = {"lora_rank": rank, "lr": args.lr, "seed": args.seed, "base_step": base.get("step"),
             "base_loss": base.get("loss"),
             "base_config": cfg}
    start_step, train_loss, val_loss = 0, float("nan"), float("nan")
    resume_path = os.path.join(ckpt_dir, "lora.pt")
    if os.path.exists(resume_path):
        ck = torch.load(resume_path, map_location="cpu")
        if ck["ident"] != ident:
            die(f"{resume_path} was made with {ck['ident']}, this run is {ident}; "
                "use another LOOM_CHECKPOINT_DIR or delete it")
        model.load_state_dict(ck["lora"], strict=False)
        optimizer.load_state_dict(ck["optimizer"])
        start_step, train_loss, val_loss = ck["step"], ck["train_loss"], ck["val_loss"]
    del base

    def evaluate():
        model.eval()
        with torch.no_grad():
            v = model(val_x, val_y).item()
        model.train()
        return v

    n_lora = sum(p.numel() for p in trainable)
    print(f"lr {args.lr:g}, lora rank {rank} (alpha {alpha:g}), {n_lora} trainable of "
          f"{sum(p.numel() for p in model.parameters())} params, steps {args.steps}, seed {args.seed}; "
          f"base step {ident['base_step']} from {args.init_checkpoint_dir}; checkpoints in {ckpt_dir}", flush=True)

    tracker = Tracker()
    try:
        if start_step:
            print(f"resumed from step {start_step}", flush=True)
        else:
            tracker.log_params({"lr": args.lr, "lora_rank": rank, "steps": args.steps,
                                "eval_every": args.eval_every, "seed": args.seed})
            val_loss = evaluate()
            print(f"step 0 val_loss {val_loss:.6f}", flush=True)
            tracker.log_metrics({"val_loss": val_loss}, step=0)

        model.train()
        step = start_step
        t0 = time.time()
        while step < args.steps:
            step += 1
            x, y = sample_batch(train_data, torch.Generator().manual_seed(step_seed(args.seed, step)),
                                args.batch_size, context)
            loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            train_loss = loss.item()
            if args.step_sleep > 0:
                time.sleep(args.step_sleep)
            stop = STOP_SIGNAL and step < args.steps

            if step % args.eval_every == 0 or step == args.steps:
                val_loss = evaluate()
                print(f"step {step} val_loss {val_loss:.6f} train_loss {train_loss:.6f}", flush=True)
                tracker.log_metrics({"val_loss": val_loss, "train_loss": train_loss}, step=step)
            periodic = args.checkpoint_every > 0 and step % args.checkpoint_every == 0
            if periodic or stop or step == args.steps:
                save_checkpoint(ckpt_dir, model, optimizer, step, train_loss, val_loss, ident)
            if stop:
                print(f"checkpointed at step {step} on {signal.Signals(STOP_SIGNAL).name}", flush=True)
                tracker.end("KILLED")
                sys.exit(128 + int(STOP_SIGNAL))

        if start_step >= args.steps:  # an earlier attempt finished training: just publish again
            val_loss = evaluate()

        # Success: publish the merged model.
        model_cfg = {"format": "TinyGPT state_dict (examples/pretrain/train.py), LoRA merged",
                     "vocab": cfg["vocab"], "context": cfg["context"], "d_model": cfg["d_model"],
                     "layers": cfg["layers"], "heads": cfg["heads"], "chars": "".join(chars),
                     "lora_rank": rank, "lora_alpha": alpha, "lora_targets": list(LORA_TARGETS),
                     "lr": args.lr, "steps": step, "seed": args.seed, "base_step": ident["base_step"],
                     "val_loss": val_loss}
        state = merged_state_dict(model, wrapped)
        with tempfile.TemporaryDirectory(prefix="finetune-model-") as tmp:
            write_model_dir(tmp, state, model_cfg)
            tracker.log_artifacts(tmp, artifact_path="model")
            dest = os.path.join(ckpt_dir, "model")
            staging = dest + ".tmp"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(tmp, staging)
            os.chmod(staging, 0o755)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(staging, dest)
        if tracker.run_id and tracker.mlflow is not None:
            print(f"model: runs:/{tracker.run_id}/model and {dest}", flush=True)
        else:
            print(f"model: {dest}", flush=True)
        tracker.end("FINISHED")
        print(f"{step - start_step} steps in {time.time() - t0:.1f}s, {time.time() - t_start:.1f}s in all", flush=True)
        print(f"FINAL val_loss={val_loss:.6f}", flush=True)
    except Exception:
        tracker.end("FAILED")  # not mlflow's atexit end_run, which would say FINISHED
        raise


if __name__ == "__main__":
    main()

"""gpu-check's fractional-GPU worker: allocate a part of the device, then count matrix products.

--alloc F allocates F x the device's memory in one piece. Under Loom's MPS limit for `gpu: 0.5`
(CUDA_MPS_PINNED_DEVICE_MEM_LIMIT) an F past the share fails with CUDA's out-of-memory error: the
worker prints it and exits 3. Then, from --start-at (epoch seconds, so that jobs started apart
compute together) for --seconds, it multiplies matrices and prints `rate=<products/s>`.
Rehearsal (no CUDA: LOOM_GPU_CHECK_REHEARSE=1 on a CPU machine): a pretend device of 1 GiB whose
limit is LOOM_GPU_MEMORY_FRACTION, checked here (nothing enforces it on a CPU), and CPU products.
"""
import argparse
import os
import sys
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--alloc", type=float, default=0.1, help="fraction of the device's memory to allocate")
p.add_argument("--seconds", type=float, default=8.0)
p.add_argument("--start-at", type=float, default=0.0)
p.add_argument("--size", type=int, default=8192, help="matrix side (CUDA: bf16)")
a = p.parse_args()

share = os.environ.get("LOOM_GPU_MEMORY_FRACTION", "1")
mps = "on" if os.environ.get("CUDA_MPS_PIPE_DIRECTORY") else "off"
cuda = torch.cuda.is_available()
if cuda:
    dev = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(0)
    total, name = props.total_memory, props.name
else:
    dev, total, name = torch.device("cpu"), 1 << 30, "rehearsal-cpu"
print(f"device={name} visible={os.environ.get('CUDA_VISIBLE_DEVICES', '')} share={share} mps={mps} "
      f"limit={os.environ.get('CUDA_MPS_PINNED_DEVICE_MEM_LIMIT', '-')} alloc={a.alloc}", flush=True)
want = int(a.alloc * total)
try:
    if not cuda and a.alloc > float(share):
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (rehearsal: {want >> 20} MiB past a share of {share})")
    hold = torch.empty(want if cuda else min(want, 64 << 20), dtype=torch.uint8, device=dev)
    hold.fill_(1)
    if cuda:
        torch.cuda.synchronize()
    print(f"allocated {want >> 20} MiB", flush=True)
except torch.cuda.OutOfMemoryError as e:
    print(f"OOM: {str(e).splitlines()[0]}", flush=True)
    sys.exit(3)

n = a.size if cuda else 256
dtype = torch.bfloat16 if cuda else torch.float32
x = torch.randn(n, n, device=dev, dtype=dtype)
y = torch.randn(n, n, device=dev, dtype=dtype)
torch.matmul(x, y)
if cuda:
    torch.cuda.synchronize()
while time.time() < a.start_at:
    time.sleep(0.01)
count, t0 = 0, time.time()
while time.time() - t0 < a.seconds:
    for _ in range(10):
        torch.matmul(x, y)
    if cuda:
        torch.cuda.synchronize()
    count += 10
dt = time.time() - t0
print(f"rate={count / dt:.2f} products/s ({count} in {dt:.2f} s, {2 * n**3 * count / dt / 1e12:.1f} TFLOP/s)", flush=True)

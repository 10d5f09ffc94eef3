"""A worker that honours its fractional GPU: it caps PyTorch's memory on the device Loom gave it.

Loom sets CUDA_VISIBLE_DEVICES to the one device and LOOM_GPU_MEMORY_FRACTION to the share
(0.5 for `gpu: 0.5`). Nothing on the device enforces the share; this call does, for PyTorch's
caching allocator. Without torch or a GPU it says what it would do and exits 0.
"""
import os

fraction = float(os.environ.get("LOOM_GPU_MEMORY_FRACTION", "1"))
device = os.environ.get("CUDA_VISIBLE_DEVICES", "")
print(f"device={device or 'none'} share={fraction}")
try:
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
        total = torch.cuda.get_device_properties(0).total_memory
        print(f"capped at {fraction * total / 2**30:.1f} GiB of {total / 2**30:.1f} GiB")
    else:
        print("no CUDA device visible: nothing to cap")
except ImportError:
    print("torch is not installed: nothing to cap")

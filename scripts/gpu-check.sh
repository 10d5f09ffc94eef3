#!/usr/bin/env bash
# npm run gpu-check: what only a real NVIDIA GPU can show, in one run of under 10 minutes with no
# network (nothing is installed: it uses what the machine has). Each step has a timeout, reports,
# and the next runs anyway. Figures and a summary go to $OUT (default ./gpu-check-out):
#   summary.txt, fixtures/ (real nvidia-smi output, for the parsers' tests), one log per step.
# Steps: discovery (the fields Loom reads), isolation (a sandboxed job given no GPU, or GPU 0 only,
# cannot open another), MPS memory limit (a client allocating past its share gets CUDA OOM, one
# within it does not). Exit 0 when every step passed, 1 when one failed; on a machine without a GPU
# it says "no GPU" and exits 0 having run nothing (issue 24: CI and CPU machines run it too).
set -u
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT/fixtures"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
FAILED=0
say() { echo "$*" | tee -a "$SUMMARY"; }
result() { # step status detail
  say "$(printf '%-12s %-5s %s' "$1" "$2" "$3")"
  [ "$2" = PASS ] || [ "$2" = SKIP ] || FAILED=1
}
say "loom gpu-check $(date -u +%FT%TZ) on $(hostname)"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! timeout 30 nvidia-smi -L >"$OUT/fixtures/nvidia-smi-L.txt" 2>&1; then
  say "no GPU: nvidia-smi is missing or lists no device; nothing was run"
  exit 0
fi

# 1. Discovery: the exact queries Loom runs (src/platforms/embedded/gpusmi.ts), kept as fixtures.
FIELDS="index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id,driver_version,mig.mode.current,ecc.errors.uncorrected.volatile.total"
if timeout 30 nvidia-smi --query-gpu=$FIELDS --format=csv,noheader,nounits >"$OUT/fixtures/query-gpu.csv" 2>"$OUT/discovery.log"; then
  N=$(grep -c . "$OUT/fixtures/query-gpu.csv")
  result discovery PASS "$N device(s): $(head -1 "$OUT/fixtures/query-gpu.csv")"
else
  result discovery FAIL "nvidia-smi --query-gpu failed: $(head -1 "$OUT/discovery.log")"
fi
timeout 30 nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits >"$OUT/fixtures/query-compute-apps.csv" 2>&1
timeout 60 nvidia-smi -q >"$OUT/fixtures/nvidia-smi-q.txt" 2>&1
ls -l /dev/nvidia* >"$OUT/fixtures/dev-nvidia.txt" 2>&1
cat /proc/driver/nvidia/gpus/*/information >"$OUT/fixtures/proc-driver-information.txt" 2>&1
UUID0=$(head -1 "$OUT/fixtures/query-gpu.csv" | cut -d, -f2 | tr -d ' ')
MEM0=$(head -1 "$OUT/fixtures/query-gpu.csv" | cut -d, -f4 | tr -d ' ')
MINOR0=$(grep -m1 'Device Minor' /proc/driver/nvidia/gpus/*/information 2>/dev/null | awk '{print $NF}')
MINOR0=${MINOR0:-0}

# What can allocate device memory: PyTorch, else a tiny CUDA C program built with nvcc.
PY=""
for p in python3 python; do
  if command -v $p >/dev/null && timeout 120 $p -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then PY=$p; break; fi
done
ALLOC=""
if [ -n "$PY" ]; then
  ALLOC="$PY -c 'import sys,torch; n=int(sys.argv[1]); x=torch.empty(n*2**20, dtype=torch.uint8, device=\"cuda\"); torch.cuda.synchronize(); print(\"allocated\", n, \"MiB\")'"
elif command -v nvcc >/dev/null; then
  cat >"$OUT/alloc.cu" <<'CU'
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
int main(int c, char** v) { size_t n = (size_t)atol(v[1]) << 20; void* p; cudaError_t e = cudaMalloc(&p, n);
  if (e != cudaSuccess) { printf("CUDA error: %s\n", cudaGetErrorString(e)); return 3; }
  cudaMemset(p, 1, n); cudaDeviceSynchronize(); printf("allocated %s MiB\n", v[1]); return 0; }
CU
  timeout 180 nvcc -o "$OUT/alloc" "$OUT/alloc.cu" >"$OUT/nvcc.log" 2>&1 && ALLOC="$OUT/alloc"
fi
say "allocator: ${ALLOC:-none (no PyTorch with CUDA, no nvcc): isolation by device nodes only, MPS not measurable}"
alloc() { if [ -n "$PY" ]; then eval "$ALLOC $1"; else "$ALLOC" "$1"; fi; }

# 2. Isolation, as Loom's sandbox lends devices (sandbox.ts, gpuhost.ts): bwrap with a fresh /dev,
# the driver's shared nodes and only the job's own /dev/nvidiaN.
if ! command -v bwrap >/dev/null; then
  result isolation SKIP "bubblewrap missing (apt-get install bubblewrap)"
else
  SHARED=""
  for n in nvidiactl nvidia-uvm nvidia-uvm-tools; do [ -e /dev/$n ] && SHARED="$SHARED --dev-bind /dev/$n /dev/$n"; done
  SYS="--ro-bind /usr /usr --ro-bind /etc /etc --ro-bind /sys /sys --proc /proc --dev /dev --tmpfs /tmp"
  for l in bin sbin lib lib64; do [ -L /$l ] && SYS="$SYS --symlink usr/$l /$l" || { [ -d /$l ] && SYS="$SYS --ro-bind /$l /$l"; }; done
  [ -d /opt ] && SYS="$SYS --ro-bind /opt /opt"
  [ -d "$PWD" ] && SYS="$SYS --ro-bind $PWD $PWD --bind $OUT $OUT"
  # Not given the GPU: no device node; the allocation (or nvidia-smi) must fail.
  timeout 120 bwrap $SYS $SHARED --unshare-pid -- env CUDA_VISIBLE_DEVICES=$UUID0 bash -c "ls /dev | grep nvidia; $(declare -f alloc); PY='$PY' ALLOC='$ALLOC'; alloc 16" >"$OUT/isolation-denied.log" 2>&1
  DENIED=$?
  timeout 120 bwrap $SYS $SHARED --dev-bind /dev/nvidia$MINOR0 /dev/nvidia$MINOR0 --unshare-pid -- env CUDA_VISIBLE_DEVICES=$UUID0 bash -c "$(declare -f alloc); PY='$PY' ALLOC='$ALLOC'; alloc 16" >"$OUT/isolation-own.log" 2>&1
  OWN=$?
  if [ -z "$ALLOC" ]; then
    result isolation SKIP "no allocator; device nodes lent: $(tr '\n' ' ' <"$OUT/isolation-denied.log")"
  elif [ $DENIED -ne 0 ] && [ $OWN -eq 0 ]; then
    result isolation PASS "a job without /dev/nvidia$MINOR0 cannot allocate (exit $DENIED); with it, it can"
  else
    result isolation FAIL "without the device: exit $DENIED; with it: exit $OWN (see isolation-*.log)"
  fi
fi

# 3. MPS: a daemon for GPU 0 (its own pipe dir), two clients of 0.5 each with Loom's limits; one
# allocates 30% of the device (fits its share), the other 70% (past it): only the second fails.
if ! command -v nvidia-cuda-mps-control >/dev/null; then
  result mps FAIL "nvidia-cuda-mps-control missing: Loom would give fractional requests whole GPUs"
elif [ -z "$ALLOC" ]; then
  result mps SKIP "no allocator (no PyTorch with CUDA, no nvcc)"
else
  MPS="$OUT/mps"; mkdir -p "$MPS/pipe" "$MPS/log"; chmod 1777 "$MPS/pipe" "$MPS/log"
  export CUDA_MPS_PIPE_DIRECTORY="$MPS/pipe" CUDA_MPS_LOG_DIRECTORY="$MPS/log"
  CUDA_VISIBLE_DEVICES=$UUID0 timeout 30 nvidia-cuda-mps-control -d >"$OUT/mps-daemon.log" 2>&1
  HALF=$((MEM0 / 2))
  export CUDA_VISIBLE_DEVICES=$UUID0 CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=${HALF}M" CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50
  T0=$(date +%s.%N)
  timeout 180 bash -c "$(declare -f alloc); PY='$PY' ALLOC='$ALLOC'; alloc $((MEM0 * 3 / 10))" >"$OUT/mps-within.log" 2>&1 &
  A=$!
  timeout 180 bash -c "$(declare -f alloc); PY='$PY' ALLOC='$ALLOC'; alloc $((MEM0 * 7 / 10))" >"$OUT/mps-past.log" 2>&1 &
  B=$!
  wait $A; WITHIN=$?; wait $B; PAST=$?
  T1=$(date +%s.%N)
  echo quit | timeout 30 nvidia-cuda-mps-control >/dev/null 2>&1
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY CUDA_MPS_PINNED_DEVICE_MEM_LIMIT CUDA_MPS_ACTIVE_THREAD_PERCENTAGE
  OOM=$(grep -ci "out of memory" "$OUT/mps-past.log")
  if [ $WITHIN -eq 0 ] && [ $PAST -ne 0 ] && [ "$OOM" -gt 0 ]; then
    result mps PASS "limit 0=${HALF}M: $((MEM0 * 3 / 10)) MiB allocated, $((MEM0 * 7 / 10)) MiB got CUDA OOM ($(echo "$T1 - $T0" | bc 2>/dev/null || echo ?) s)"
  else
    result mps FAIL "within share exit $WITHIN, past share exit $PAST, OOM lines $OOM (see mps-*.log, $MPS/log)"
  fi
fi

say "fixtures: $OUT/fixtures (copy into src/platforms/embedded/ tests as captured nvidia-smi output)"
[ $FAILED -eq 0 ] && say "gpu-check: PASS" || say "gpu-check: FAIL"
exit $FAILED

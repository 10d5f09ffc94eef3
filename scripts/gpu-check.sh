#!/usr/bin/env bash
# npm run gpu-check: what only a real NVIDIA GPU can show, in one run of under 10 minutes with no
# network (nothing is installed: it uses the machine's python3 with PyTorch, and the node, dist/
# and node_modules that `npm run gpu-check:pack` put in .gpucheck/ where the machine has none).
# Each step has a timeout, reports, and the next runs anyway.
# Steps: discovery (the fields Loom reads), isolation (a sandboxed job given no GPU, or GPU 0 only,
# cannot open another), MPS memory limit (a client allocating past its share gets CUDA OOM, one
# within it does not); then under a real `loom up` on the GPU (scripts/gpu-check/loom-steps.mjs):
# two `gpu: 0.5` jobs (the over-allocating one fails alone with CUDA OOM; their throughput against
# a whole-GPU job), 2-process DDP on the GPU, an InferenceService replica answering an OpenAI chat
# request through the gateway, and examples/pretrain under Loom against torchrun.
# $OUT (default ./gpu-check-out) gets three files, within the device tool's 8: summary.txt (the
# table), results-section.md (the dated section also appended to bench/RESULTS.md) and
# gpu-check-logs.tar.gz (fixtures/ with real nvidia-smi output for the parsers' tests, every log).
# Exit 0 when every step passed, 1 when one failed; on a machine without a GPU it says "no GPU"
# and exits 0 having run nothing (issue 24: CI and CPU machines run it too).
# LOOM_GPU_CHECK_REHEARSE=1: the Loom steps on this machine's CPUs instead (`loom up --gpus 1`,
# gloo, CPU tensors, no MPS), to prove their plumbing where there is no GPU (test/gpu-check.test.ts).
set -u
START=$(date +%s)
DEADLINE=$((START + ${LOOM_GPU_CHECK_SECONDS:-570}))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="${OUT:-$PWD/gpu-check-out}"
WORK="${LOOM_GPU_CHECK_WORK:-$(mktemp -d /tmp/loom-gpu-check.XXXXXX)}"
REHEARSE="${LOOM_GPU_CHECK_REHEARSE:-0}"
mkdir -p "$OUT" "$WORK/fixtures"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
FAILED=0
say() { echo "$*" | tee -a "$SUMMARY"; }
result() { # step status detail
  say "$(printf '%-12s %-5s %s' "$1" "$2" "$3")"
  [ "$2" = PASS ] || [ "$2" = SKIP ] || FAILED=1
}
# Everything but the table goes to $WORK, packed into one file of $OUT at the end.
pack_out() {
  tar -C "$WORK" --exclude=loom-data --exclude=loom-config.yaml --exclude=node --exclude='torchrun-ckpt-*' -czf "$OUT/gpu-check-logs.tar.gz" . 2>/dev/null
}
say "loom gpu-check $(date -u +%FT%TZ) on $(hostname)"

if [ "$REHEARSE" = 1 ]; then
  say "rehearsal on CPU (LOOM_GPU_CHECK_REHEARSE=1): the Loom steps only, on virtual GPUs; nothing is measured"
elif ! command -v nvidia-smi >/dev/null 2>&1 || ! timeout 30 nvidia-smi -L >"$WORK/fixtures/nvidia-smi-L.txt" 2>&1; then
  say "no GPU: nvidia-smi is missing or lists no device; nothing was run"
  exit 0
fi
OUTDIR="$OUT"
OUT="$WORK" # the GPU steps below write their logs and fixtures here

if [ "$REHEARSE" != 1 ]; then
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
  unset CUDA_VISIBLE_DEVICES CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY CUDA_MPS_PINNED_DEVICE_MEM_LIMIT CUDA_MPS_ACTIVE_THREAD_PERCENTAGE
  OOM=$(grep -ci "out of memory" "$OUT/mps-past.log")
  if [ $WITHIN -eq 0 ] && [ $PAST -ne 0 ] && [ "$OOM" -gt 0 ]; then
    result mps PASS "limit 0=${HALF}M: $((MEM0 * 3 / 10)) MiB allocated, $((MEM0 * 7 / 10)) MiB got CUDA OOM ($(echo "$T1 - $T0" | bc 2>/dev/null || echo ?) s)"
  else
    result mps FAIL "within share exit $WITHIN, past share exit $PAST, OOM lines $OOM (see mps-*.log, $MPS/log)"
  fi
fi

fi # not a rehearsal
OUT="$OUTDIR"

# 4. Under Loom. The python with PyTorch (CUDA on the GPU; Debian's CPU build in the rehearsal).
if [ "$REHEARSE" = 1 ]; then
  PY=""
  for p in /usr/bin/python3 python3; do
    if command -v $p >/dev/null && timeout 120 $p -c "import torch" 2>/dev/null; then PY=$(command -v $p); break; fi
  done
else
  [ -n "$PY" ] && PY=$(command -v "$PY")
fi
# Node >= 20: the machine's, else the one gpu-check:pack put in .gpucheck/ (xz, or Python's lzma
# where xz is missing); dist/ and node_modules/ likewise, unpacked into the checkout.
unxz_to() { xz -dc "$1" >"$2" 2>/dev/null || ${PY:-python3} -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; }
NODE=""
# LOOM_GPU_CHECK_PACKED=1 takes .gpucheck's even where the machine has one (to rehearse that path).
if [ "${LOOM_GPU_CHECK_PACKED:-0}" != 1 ] && command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 20 ]; then
  NODE=$(command -v node)
elif [ -f "$ROOT/.gpucheck/node.xz" ]; then
  unxz_to "$ROOT/.gpucheck/node.xz" "$WORK/node" && chmod +x "$WORK/node" && NODE="$WORK/node"
fi
if [ -f "$ROOT/.gpucheck/loom.tar.xz" ] && { [ ! -f "$ROOT/dist/cli/main.js" ] || [ ! -e "$ROOT/node_modules" ] || [ "${LOOM_GPU_CHECK_PACKED:-0}" = 1 ]; }; then
  { tar -xJf "$ROOT/.gpucheck/loom.tar.xz" -C "$ROOT" 2>/dev/null ||
    ${PY:-python3} -c 'import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$ROOT/.gpucheck/loom.tar.xz" "$ROOT"; } &&
    touch "$ROOT/dist/cli/main.js" # as new as the copied sources: no "stale build" warning
fi
if [ -z "$NODE" ]; then
  result loom FAIL "no node >= 20 here and no .gpucheck/node.xz: run npm run gpu-check:pack and carry .gpucheck"
elif [ ! -f "$ROOT/dist/cli/main.js" ]; then
  result loom FAIL "no dist/ (npm run build, or npm run gpu-check:pack and carry .gpucheck)"
elif [ -z "$PY" ]; then
  result loom FAIL "no python with PyTorch: the Loom steps run PyTorch workers"
else
  say "loom: node $("$NODE" --version) at $NODE, python $PY"
  LEFT=$((DEADLINE - $(date +%s)))
  GC_MODE=$([ "$REHEARSE" = 1 ] && echo rehearse || echo gpu) GC_PY="$PY" GC_WORK="$WORK" GC_SUMMARY="$SUMMARY" \
    GC_DEADLINE=$((DEADLINE - 20)) timeout $((LEFT > 30 ? LEFT : 30)) "$NODE" "$ROOT/scripts/gpu-check/loom-steps.mjs" 2>&1 |
    tee "$WORK/loom-steps.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { FAILED=1; grep -q "^loom-up" "$SUMMARY" || result loom FAIL "loom-steps ended early: $(tail -3 "$WORK/loom-steps.log" | tr '\n' ' ')"; }
fi

# The dated section for bench/RESULTS.md: the machine, then the table.
if [ "$REHEARSE" = 1 ]; then
  GPU="none (CPU rehearsal)"; DRIVER="-"; CUDA="-"
else
  GPU=$(head -1 "$WORK/fixtures/query-gpu.csv" 2>/dev/null | cut -d, -f3 | sed 's/^ *//')
  DRIVER=$(head -1 "$WORK/fixtures/query-gpu.csv" 2>/dev/null | cut -d, -f8 | tr -d ' ')
  CUDA=$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)
fi
TORCH=$([ -n "$PY" ] && timeout 60 "$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null)
[ "$FAILED" -eq 0 ] && VERDICT=PASS || VERDICT=FAIL
{
  echo
  echo "## $(date -u '+%F %H:%M') UTC — gpu-check$([ "$REHEARSE" = 1 ] && echo " (CPU rehearsal)")"
  echo
  echo "GPU: ${GPU:-?}; driver ${DRIVER:-?}; CUDA ${CUDA:-?}; PyTorch ${TORCH:-?}; $(nproc) CPUs; $(( $(date +%s) - START )) s in all: **$VERDICT**"
  echo
  echo '```'
  grep -E '^[a-z-]+ +(PASS|FAIL|SKIP) ' "$SUMMARY"
  echo '```'
} >"$OUT/results-section.md"
# LOOM_GPU_CHECK_RESULTS: another file to append to (tests: never the checkout's own).
RESULTS="${LOOM_GPU_CHECK_RESULTS:-$ROOT/bench/RESULTS.md}"
if [ "$REHEARSE" != 1 ] && [ -f "$RESULTS" ]; then
  cat "$OUT/results-section.md" >>"$RESULTS"
  say "appended to $RESULTS (and in $OUT/results-section.md: copy it into the repository's)"
fi
pack_out
echo
echo "step         result what was seen"
grep -E '^[a-z-]+ +(PASS|FAIL|SKIP) ' "$SUMMARY"
echo
say "logs and fixtures: $OUT/gpu-check-logs.tar.gz (fixtures/: real nvidia-smi output for the parsers' tests)"
[ $FAILED -eq 0 ] && say "gpu-check: PASS" || say "gpu-check: FAIL"
exit $FAILED

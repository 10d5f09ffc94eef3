/**
 * A fractional GPU: the worker sees its one device and the share it may use. Embedded with CUDA
 * MPS the runtime enforces it (docs/gpus.md); elsewhere PyTorch scripts honour it with
 * torch.cuda.set_per_process_memory_fraction(float(os.environ["LOOM_GPU_MEMORY_FRACTION"])).
 */
export function gpuShareEnv(share: number | undefined): Record<string, string> {
  if (share === undefined || share >= 1) return {};
  return { LOOM_GPU_FRACTION: String(share), LOOM_GPU_MEMORY_FRACTION: String(share) };
}

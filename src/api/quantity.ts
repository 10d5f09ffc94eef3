/**
 * Kubernetes-style resource quantities. Specs keep what the user wrote ("500m", "2", "512Mi");
 * the scheduler works in integers (millicores, bytes) so that sums never drift.
 */

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 };
const DECIMAL: Record<string, number> = { k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

const QUANTITY = /^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/;

/** CPU as millicores: 2 → 2000, "500m" → 500, "1.5" → 1500. Undefined for malformed input. */
export function parseCpuMillis(value: string | number): number | undefined {
  if (typeof value === "number")
    return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : undefined;
  const m = QUANTITY.exec(value.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  if (m[2] === undefined) return Math.round(n * 1000);
  if (m[2] === "m") return Math.round(n);
  return undefined;
}

/** Memory as bytes: "512Mi" → 536870912, "1G" → 1e9, 1024 → 1024. Undefined for malformed input. */
export function parseMemoryBytes(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined;
  const m = QUANTITY.exec(value.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const suffix = m[2];
  if (suffix === undefined) return Math.round(n);
  const factor = BINARY[suffix] ?? DECIMAL[suffix];
  return factor === undefined ? undefined : Math.round(n * factor);
}

/** Human form for messages: 536870912 → "512Mi". */
export function formatBytes(bytes: number): string {
  for (const [suffix, factor] of Object.entries(BINARY).reverse()) {
    if (bytes >= factor && bytes % (factor / 1024) === 0) {
      const v = bytes / factor;
      return `${Number.isInteger(v) ? v : v.toFixed(1)}${suffix}`;
    }
  }
  return String(bytes);
}

/** Human form for messages: 1500 → "1.5", 250 → "250m". */
export function formatCpu(millis: number): string {
  return millis % 1000 === 0 ? String(millis / 1000) : millis >= 1000 ? String(millis / 1000) : `${millis}m`;
}

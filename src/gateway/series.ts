import type { Registry } from "prom-client";

/**
 * Counters, gauges and histograms for the gateway's request path, read by a prom-client Registry
 * at scrape time. prom-client hashes the label set on every inc/observe, even through a child
 * from `labels()`: four such calls per request were a tenth of the gateway's CPU (bench:gateway).
 * Here a series is a plain object found once per label set (the gateway keeps it per revision),
 * and recording is a number increment. The exposition is prom-client's, unchanged.
 */

type Labels = Record<string, string | number>;

interface MetricValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

abstract class SeriesMetric<S> {
  private readonly series = new Map<string, { labels: Labels; s: S }>();

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
    private readonly labelNames: readonly string[],
  ) {
    // A prom-client metric is whatever has name, help, type and get(); the registry formats it.
    registry.registerMetric(this as unknown as Parameters<Registry["registerMetric"]>[0]);
  }

  /** The series of a label set, made on first use. Keep it: looking it up again costs a key. */
  labels(labels: Labels): S {
    const key = this.labelNames.map((n) => String(labels[n] ?? "")).join("\u0000");
    let entry = this.series.get(key);
    if (!entry) {
      const own: Labels = {};
      for (const n of this.labelNames) own[n] = String(labels[n] ?? "");
      entry = { labels: own, s: this.make() };
      this.series.set(key, entry);
    }
    return entry.s;
  }

  /** Forgets every series (prom-client's registry.resetMetrics). */
  reset(): void {
    this.series.clear();
  }

  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: "sum" }> {
    const values: MetricValue[] = [];
    for (const { labels, s } of this.series.values()) this.values(labels, s, values);
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: "sum" });
  }

  protected abstract make(): S;
  protected abstract values(labels: Labels, s: S, out: MetricValue[]): void;
}

export class CounterSeries {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

export class SeriesCounter extends SeriesMetric<CounterSeries> {
  constructor(registry: Registry, o: { name: string; help: string; labelNames: readonly string[] }) {
    super(registry, o.name, o.help, "counter", o.labelNames);
  }
  inc(labels: Labels, n = 1): void {
    this.labels(labels).inc(n);
  }
  protected make(): CounterSeries {
    return new CounterSeries();
  }
  protected values(labels: Labels, s: CounterSeries, out: MetricValue[]): void {
    out.push({ labels, value: s.value });
  }
}

export class GaugeSeries {
  value = 0;
  inc(): void {
    this.value++;
  }
  dec(): void {
    this.value--;
  }
  set(v: number): void {
    this.value = v;
  }
}

export class SeriesGauge extends SeriesMetric<GaugeSeries> {
  constructor(registry: Registry, o: { name: string; help: string; labelNames: readonly string[] }) {
    super(registry, o.name, o.help, "gauge", o.labelNames);
  }
  set(labels: Labels, v: number): void {
    this.labels(labels).set(v);
  }
  protected make(): GaugeSeries {
    return new GaugeSeries();
  }
  protected values(labels: Labels, s: GaugeSeries, out: MetricValue[]): void {
    out.push({ labels, value: s.value });
  }
}

export class HistogramSeries {
  /** Per bucket, not cumulative (cumulated at scrape); the last one is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export class SeriesHistogram extends SeriesMetric<HistogramSeries> {
  private readonly buckets: readonly number[];
  constructor(
    registry: Registry,
    o: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[] },
  ) {
    super(registry, o.name, o.help, "histogram", o.labelNames);
    this.buckets = [...o.buckets].sort((a, b) => a - b);
  }
  observe(labels: Labels, v: number): void {
    this.labels(labels).observe(v);
  }
  protected make(): HistogramSeries {
    return new HistogramSeries(this.buckets);
  }
  protected values(labels: Labels, s: HistogramSeries, out: MetricValue[]): void {
    let cumulative = 0;
    for (let i = 0; i <= this.buckets.length; i++) {
      cumulative += s.counts[i]!;
      const le = i < this.buckets.length ? this.buckets[i]! : "+Inf";
      out.push({ metricName: `${this.name}_bucket`, labels: { le, ...labels }, value: cumulative });
    }
    out.push({ metricName: `${this.name}_sum`, labels, value: s.sum });
    out.push({ metricName: `${this.name}_count`, labels, value: s.count });
  }
}

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { SeriesCounter, SeriesGauge, SeriesHistogram } from "./series.js";

/** The same observations through prom-client and through series.ts must expose the same text. */
describe("series metrics", () => {
  it("expose exactly what prom-client's counter, gauge and histogram expose", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const labelNames = ["project", "service"];
    const buckets = [0.01, 0.1, 1];
    const c1 = new SeriesCounter(ours, { name: "c", help: "a counter", labelNames });
    const c2 = new Counter({ name: "c", help: "a counter", labelNames, registers: [theirs] });
    const g1 = new SeriesGauge(ours, { name: "g", help: "a gauge", labelNames });
    const g2 = new Gauge({ name: "g", help: "a gauge", labelNames, registers: [theirs] });
    const h1 = new SeriesHistogram(ours, { name: "h", help: "a histogram", labelNames, buckets });
    const h2 = new Histogram({ name: "h", help: "a histogram", labelNames, buckets, registers: [theirs] });

    const a = { project: "p", service: "a" };
    const b = { project: "p", service: "b" };
    const bound = h1.labels(a);
    for (const v of [0.005, 0.01, 0.05, 0.5, 2, 100]) {
      bound.observe(v);
      h2.observe(a, v);
    }
    h1.observe(b, 0.2);
    h2.observe(b, 0.2);
    c1.labels(a).inc();
    c1.inc(a, 4);
    c2.inc(a, 5);
    c1.inc(b);
    c2.inc(b);
    const ga = g1.labels(a);
    ga.inc();
    ga.inc();
    ga.dec();
    g2.inc(a);
    g1.set(b, 7);
    g2.set(b, 7);

    expect(await ours.metrics()).toBe(await theirs.metrics());
    ours.resetMetrics();
    expect(await ours.metrics()).toBe(
      "# HELP c a counter\n# TYPE c counter\n\n# HELP g a gauge\n# TYPE g gauge\n\n# HELP h a histogram\n# TYPE h histogram\n",
    );
  });
});

/**
 * Traffic split between an InferenceService's revisions (stable/canary) by weight. Smooth
 * weighted round robin (nginx's algorithm) rather than a random draw: it is deterministic, spreads
 * the minority revision evenly through the sequence instead of in bursts, and over any run of
 * `sum(weights)` requests gives each revision exactly its weight, so a 90/10 split is 900/100 over
 * 1,000 requests, not "about".
 */

export interface WeightedTarget {
  name: string;
  /** Relative weight; percentages are the usual choice but any non-negative numbers work. */
  weight: number;
}

export class TrafficSplitter {
  private targets: { name: string; weight: number; current: number }[] = [];

  constructor(targets: WeightedTarget[] = []) {
    this.update(targets);
  }

  /**
   * Replaces the targets. Revisions that stay keep their running credit, so an unrelated change
   * (a replica count, a new third revision) does not restart the sequence.
   */
  update(targets: WeightedTarget[]): void {
    const before = new Map(this.targets.map((t) => [t.name, t.current]));
    const positive = targets.filter((t) => Number.isFinite(t.weight) && t.weight > 0);
    // All weights zero (or none given) would route nothing; splitting evenly is the least surprising.
    const effective = positive.length ? positive : targets.map((t) => ({ name: t.name, weight: 1 }));
    this.targets = effective.map((t) => ({
      name: t.name,
      weight: t.weight,
      current: before.get(t.name) ?? 0,
    }));
  }

  /** The revision the next request goes to, or undefined when there are no targets. */
  pick(): string | undefined {
    let total = 0;
    let best: (typeof this.targets)[number] | undefined;
    for (const t of this.targets) {
      t.current += t.weight;
      total += t.weight;
      if (!best || t.current > best.current) best = t;
    }
    if (!best) return undefined;
    best.current -= total;
    return best.name;
  }

  /** A key that changes when the names or weights do, to tell whether `update` is needed. */
  static signature(targets: WeightedTarget[]): string {
    return targets.map((t) => `${t.name}=${t.weight}`).join(",");
  }
}

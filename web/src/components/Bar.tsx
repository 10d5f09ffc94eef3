/** A use bar: held against the largest of deserved and limit, with marks at deserved and limit. */
export function Bar(props: {
  label: string;
  held: number;
  deserved?: number;
  limit?: number;
  unit?: string;
}) {
  const { held, deserved, limit } = props;
  const scale = Math.max(held, deserved ?? 0, limit ?? 0, 1e-9);
  const pct = (n: number) => `${Math.min(100, (n / scale) * 100)}%`;
  const fmt = (n: number) => `${Math.round(n * 100) / 100}${props.unit ? ` ${props.unit}` : ""}`;
  const words =
    `${props.label}: ${fmt(held)} held` +
    (deserved !== undefined ? `, ${fmt(deserved)} deserved` : "") +
    (limit !== undefined ? `, limit ${fmt(limit)}` : "");
  const over = deserved !== undefined && held > deserved;
  return (
    <div className="bar" role="img" aria-label={words} title={words}>
      <div className={over ? "fill over" : "fill"} style={{ width: pct(held) }} />
      {deserved !== undefined && <div className="mark deserved" style={{ left: pct(deserved) }} />}
      {limit !== undefined && <div className="mark limit" style={{ left: pct(limit) }} />}
    </div>
  );
}

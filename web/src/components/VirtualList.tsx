import { type ReactNode, useEffect, useRef, useState } from "react";

/**
 * A list that renders only the rows in view (plus a margin), so 10,000 rows cost what 30 do.
 * Rows have one fixed height; the list scrolls inside its own box.
 */
export function VirtualList<T>(props: {
  items: T[];
  rowHeight: number;
  height: number;
  label: string;
  row: (item: T, index: number) => ReactNode;
  keyOf: (item: T) => string;
}) {
  const { items, rowHeight, height } = props;
  const box = useRef<HTMLElement>(null);
  const [top, setTop] = useState(0);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const on = () => setTop(el.scrollTop);
    el.addEventListener("scroll", on, { passive: true });
    return () => el.removeEventListener("scroll", on);
  }, []);
  const first = Math.max(0, Math.floor(top / rowHeight) - 10);
  const last = Math.min(items.length, Math.ceil((top + height) / rowHeight) + 10);
  const rows: ReactNode[] = [];
  for (let i = first; i < last; i++) {
    const item = items[i]!;
    rows.push(
      <li key={props.keyOf(item)} className="vrow" style={{ top: i * rowHeight, height: rowHeight }}>
        {props.row(item, i)}
      </li>,
    );
  }
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: the scroll box is reachable by keyboard to scroll it
    <section ref={box} className="vlist" style={{ height }} tabIndex={0} aria-label={props.label}>
      <ul style={{ height: items.length * rowHeight }} aria-label={props.label}>
        {rows}
      </ul>
    </section>
  );
}

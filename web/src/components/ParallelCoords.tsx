import { useEffect, useMemo, useRef } from "react";
import { type PcTrial, parallelCoordinates } from "../parcoords.js";

const W = 760;
const H = 300;
const PAD = { top: 24, bottom: 36, left: 56, right: 56 };
const LINE = "#0969da";
const STOPPED = "#bc4c00";
const BEST = "#1a7f37";

/**
 * Parallel coordinates on one canvas (hundreds of trials draw in a frame): an axis per swept
 * parameter and one for the objective, a polyline per trial; early-stopped trials dashed in
 * orange, the best in green. The figure carries what it draws as data attributes (data-axes,
 * data-lines, data-stopped) and says it in words for screen readers.
 */
export function ParallelCoords(props: {
  trials: PcTrial[];
  params: string[];
  objective: string;
  best?: number;
}) {
  const { trials, params, objective, best } = props;
  const canvas = useRef<HTMLCanvasElement>(null);
  const view = useMemo(() => parallelCoordinates(trials, params, objective), [trials, params, objective]);
  useEffect(() => {
    const c = canvas.current;
    const g = c?.getContext("2d");
    if (!c || !g) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = W * dpr;
    c.height = H * dpr;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const n = view.axes.length;
    const x = (i: number) => PAD.left + (n === 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (n - 1));
    const y = (at: number) => PAD.top + (1 - at) * (H - PAD.top - PAD.bottom);
    // Stopped first, then the rest, then the best: what matters most is drawn last, on top.
    const order = [...view.lines].sort(
      (a, b) => rank(a.trial, best) - rank(b.trial, best) || a.trial.number - b.trial.number,
    );
    for (const { trial, ys } of order) {
      g.strokeStyle = trial.number === best ? BEST : trial.stopped ? STOPPED : LINE;
      g.lineWidth = trial.number === best ? 2.5 : 1.5;
      g.globalAlpha = trial.number === best ? 1 : 0.7;
      g.setLineDash(trial.stopped ? [5, 4] : []);
      g.beginPath();
      let drawing = false;
      ys.forEach((at, i) => {
        if (at === undefined) drawing = false;
        else if (drawing) g.lineTo(x(i), y(at));
        else {
          g.moveTo(x(i), y(at));
          drawing = true;
        }
      });
      g.stroke();
    }
    g.globalAlpha = 1;
    g.setLineDash([]);
    g.fillStyle = "#1f2328";
    g.strokeStyle = "#57606a";
    g.lineWidth = 1;
    g.font = "12px system-ui, sans-serif";
    view.axes.forEach((a, i) => {
      g.beginPath();
      g.moveTo(x(i), y(0));
      g.lineTo(x(i), y(1));
      g.stroke();
      g.textAlign = "center";
      g.fillText(a.log ? `${a.name} (log)` : a.name, x(i), H - 12);
      g.textAlign = i === n - 1 ? "left" : "right";
      for (const t of a.ticks) g.fillText(t.label, x(i) + (i === n - 1 ? 6 : -6), y(t.at) + 4);
    });
  }, [view, best]);
  const stopped = trials.filter((t) => t.stopped).length;
  return (
    <figure
      className="chart parcoords"
      data-axes={view.axes.map((a) => a.name).join(",")}
      data-lines={view.lines.length}
      data-stopped={stopped}
    >
      <canvas
        ref={canvas}
        style={{ width: W, height: H }}
        role="img"
        aria-label={`Parallel coordinates: ${view.lines.length} trials across ${view.axes
          .map((a) => a.name)
          .join(", ")}; ${stopped} stopped early (dashed)`}
      />
      <figcaption className="muted">
        <span style={{ color: LINE }}>━</span> trial <span style={{ color: STOPPED }}>╍</span> stopped early{" "}
        <span style={{ color: BEST }}>━</span> best
      </figcaption>
    </figure>
  );
}

const rank = (t: PcTrial, best: number | undefined) => (t.number === best ? 2 : t.stopped ? 0 : 1);

// A small live chart on a 2D canvas: latency per inference (left axis) and the level index
// (right axis, a step line) over the last `windowMs` milliseconds. No library.

export class LiveChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{windowMs?: number, levels?: number}} options levels: how many levels the axis shows
   */
  constructor(canvas, { windowMs = 30000, levels = 1 } = {}) {
    this.canvas = canvas;
    this.windowMs = windowMs;
    this.levels = Math.max(1, levels);
    this.points = []; // {t, ms, level}
  }

  /** Record one inference: its time, latency and the level it ran at (index, or null). */
  push(t, ms, level) {
    this.points.push({ t, ms, level });
    while (this.points.length > 0 && this.points[0].t < t - this.windowMs) this.points.shift();
    this.draw();
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    const pad = { left: 44, right: 40, top: 10, bottom: 18 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#555";
    if (this.points.length === 0) return;
    // The axis grows with the history until it spans windowMs, then scrolls.
    const tEnd = this.points[this.points.length - 1].t;
    const span = Math.min(this.windowMs, Math.max(1000, tEnd - this.points[0].t));
    const tStart = tEnd - span;
    const x = (t) => pad.left + ((t - tStart) / span) * plotW;
    const maxMs = niceCeiling(Math.max(...this.points.map((p) => p.ms)));
    const yMs = (ms) => pad.top + plotH - (ms / maxMs) * plotH;
    const levelSpan = Math.max(1, this.levels - 1);
    const yLevel = (level) => pad.top + (level / levelSpan) * plotH;

    ctx.strokeStyle = "#e0e0e0";
    ctx.beginPath();
    for (const fraction of [0, 0.5, 1]) {
      ctx.moveTo(pad.left, pad.top + fraction * plotH);
      ctx.lineTo(pad.left + plotW, pad.top + fraction * plotH);
    }
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(`${maxMs} ms`, pad.left - 4, pad.top + 8);
    ctx.fillText("0", pad.left - 4, pad.top + plotH);
    ctx.textAlign = "left";
    ctx.fillText("L0", pad.left + plotW + 4, pad.top + 8);
    ctx.fillText(`L${levelSpan}`, pad.left + plotW + 4, pad.top + plotH);
    ctx.fillText(`last ${(span / 1000).toFixed(1)} s`, pad.left, height - 4);

    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#1565c0";
    ctx.beginPath();
    this.points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), yMs(p.ms)) : ctx.lineTo(x(p.t), yMs(p.ms))));
    ctx.stroke();

    ctx.lineWidth = 2;
    ctx.strokeStyle = "#ef6c00";
    ctx.beginPath();
    let previous = null;
    for (const p of this.points) {
      if (p.level === null) { previous = null; continue; }
      if (previous === null) ctx.moveTo(x(p.t), yLevel(p.level));
      else { ctx.lineTo(x(p.t), yLevel(previous)); ctx.lineTo(x(p.t), yLevel(p.level)); }
      previous = p.level;
    }
    ctx.stroke();
  }
}

/** 0.83 -> 1, 3.2 -> 5, 17 -> 20: an axis maximum that reads well. */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

// A tiny live chart for the demo: client buffered bytes, ring fill, server send stall.
// Python pushes one point per readout tick; drawing stays in JS (no per-point FFI).

const WINDOW_S = 60;
const SERIES = [
  { key: "buffered", label: "client buffered (KB)", color: "#c0392b", scale: 1 / 1024 },
  { key: "ring", label: "ring fill (KB)", color: "#2f6fde", scale: 1 / 1024 },
  { key: "stall", label: "server send stalled (%)", color: "#1f8a4c", scale: 100 },
];

export function createChart(canvas) {
  const points = [];
  const ctx = canvas.getContext("2d");

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 4, top = 18, bottom = h - 4, plotW = w - left - 4;
    const now = points.length ? points[points.length - 1].t : 0;
    // The x axis grows with the session up to a minute, so early seconds fill the width.
    const span = points.length ? Math.max(10, Math.min(WINDOW_S, now - points[0].t)) : WINDOW_S;
    ctx.font = "11px system-ui, sans-serif";
    let x0 = left;
    for (const s of SERIES) {
      const values = points.map((p) => p[s.key] * s.scale);
      const max = Math.max(1, ...values);
      ctx.fillStyle = s.color;
      const text = `${s.label}: ${values.length ? values[values.length - 1].toFixed(0) : 0} (max ${max.toFixed(0)})`;
      ctx.fillText(text, x0, 12);
      x0 += ctx.measureText(text).width + 14;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      points.forEach((p, i) => {
        const x = left + plotW * (1 - (now - p.t) / span);
        const y = bottom - ((p[s.key] * s.scale) / max) * (bottom - top);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
  }

  return {
    push(t, buffered, ring, stall) {
      points.push({ t, buffered, ring, stall });
      while (points.length && t - points[0].t > WINDOW_S) points.shift();
      draw();
    },
    clear() { points.length = 0; draw(); },
  };
}

// Time-series line charts drawn as SVG: no library, no network, a few hundred points each.
// A chart is redrawn whole on every update (cheap at this size) and exposes what it drew in
// data attributes (data-points, data-updates, data-last) for the browser test.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#5aa9e6", "#f2a65a", "#7bd389", "#e5534b", "#c38fff", "#f7d154",
                 "#4dd0c8", "#ff8fb1", "#a3be8c", "#b48ead"];

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// 1234567 → "1.23M"; small values keep a few significant digits.
function formatNumber(v, unit) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  let text;
  if (unit === "s") {
    if (a === 0) text = "0 s";
    else if (a < 1e-3) text = (v * 1e6).toFixed(0) + " µs";
    else if (a < 1) text = (v * 1e3).toPrecision(3) + " ms";
    else text = v.toPrecision(3) + " s";
    return text;
  }
  if (a >= 1e9) text = (v / 1e9).toPrecision(3) + "G";
  else if (a >= 1e6) text = (v / 1e6).toPrecision(3) + "M";
  else if (a >= 1e4) text = (v / 1e3).toPrecision(3) + "k";
  else if (a >= 100 || Number.isInteger(v)) text = Math.round(v).toLocaleString("en-US");
  else text = v.toPrecision(3);
  return unit && unit !== "msgs" && unit !== "alerts" ? text + " " + unit : text;
}

// The smallest "nice" number (1, 2, 2.5, 5 × 10^k) at or above x.
function niceCeil(x) {
  if (!(x > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function clock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8);
}

class LineChart {
  // container: a div; options.unit formats values ("s", "/s", "msgs", "").
  constructor(container, options) {
    this.container = container;
    this.unit = (options && options.unit) || container.dataset.unit || "";
    this.height = 170;
    this.updates = 0;
    this.svg = svgEl("svg", { role: "img", "aria-label": container.id });
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    container.append(this.svg, this.legend);
  }

  // series: [{name, points: [[t, v|null], …]}]; window: [t0, t1] in epoch seconds.
  update(series, window) {
    const width = Math.max(this.container.clientWidth || 400, 200);
    const height = this.height;
    const m = { left: 58, right: 10, top: 8, bottom: 20 };
    const w = width - m.left - m.right;
    const h = height - m.top - m.bottom;
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.svg.replaceChildren();
    const [t0, t1] = window;
    const span = Math.max(t1 - t0, 1);
    let max = 0;
    let drawn = 0;
    for (const s of series) for (const [, v] of s.points) if (v !== null && isFinite(v)) max = Math.max(max, v);
    const top = niceCeil(max * 1.05);
    const x = (t) => m.left + ((t - t0) / span) * w;
    const y = (v) => m.top + h - (v / top) * h;

    const grid = svgEl("g", { class: "grid" });
    const axis = svgEl("g", { class: "axis" });
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      grid.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: y(v), y2: y(v) }));
      const label = svgEl("text", { x: m.left - 6, y: y(v) + 3, "text-anchor": "end" });
      label.textContent = formatNumber(v, this.unit);
      axis.append(label);
    }
    const ticks = 4;
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + (span * i) / ticks;
      const label = svgEl("text", {
        x: x(t), y: height - 4,
        "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle",
      });
      label.textContent = clock(t);
      axis.append(label);
    }
    this.svg.append(grid, axis);

    const last = {};
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      let d = "";
      let pen = false;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined || !isFinite(v) || t < t0) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
        drawn += 1;
        last[s.name] = v;
      }
      if (d) this.svg.append(svgEl("path", { d, class: "series", stroke: color, "data-name": s.name }));
    });
    if (!drawn) {
      const empty = svgEl("text", { x: m.left + w / 2, y: m.top + h / 2, "text-anchor": "middle", class: "empty" });
      empty.textContent = "no data yet";
      this.svg.append(empty);
    }

    this.legend.replaceChildren();
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = s.color || PALETTE[i % PALETTE.length];
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = formatNumber(last[s.name] ?? null, this.unit);
      item.append(swatch, document.createTextNode(s.name), value);
      this.legend.append(item);
    });

    this.updates += 1;
    this.container.dataset.points = String(drawn);
    this.container.dataset.updates = String(this.updates);
    this.container.dataset.last = JSON.stringify(last);
  }
}

window.LineChart = LineChart;
window.formatNumber = formatNumber;

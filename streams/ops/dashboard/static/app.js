// Polls /api/state once a second, keeps the points of the last WINDOW seconds, redraws.
"use strict";

const WINDOW_S = 300;
const POLL_MS = 1000;
const points = [];
let since = 0;

const charts = {
  lag: new LineChart(document.getElementById("chart-lag")),
  throughput: new LineChart(document.getElementById("chart-throughput")),
  latency: new LineChart(document.getElementById("chart-latency")),
  deadLetters: new LineChart(document.getElementById("chart-dead-letters")),
  batch: new LineChart(document.getElementById("chart-batch")),
  stages: new LineChart(document.getElementById("chart-stages")),
  prequential: new LineChart(document.getElementById("chart-prequential")),
  drift: new LineChart(document.getElementById("chart-drift")),
  freshness: new LineChart(document.getElementById("chart-freshness")),
};

// One series per key found in any point: pick(point) returns {name: value}.
function seriesOf(pick, fixed) {
  const names = new Set(fixed || []);
  for (const p of points) for (const k of Object.keys(pick(p) || {})) names.add(k);
  return [...names].map((name) => ({
    name,
    points: points.map((p) => {
      const v = (pick(p) || {})[name];
      return [p.t, v === undefined ? null : v];
    }),
  }));
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.append(td);
}

function fillTable(table, head, rows) {
  table.replaceChildren();
  const tr = document.createElement("tr");
  for (const h of head) {
    const th = document.createElement("th");
    th.textContent = h.replace(/^#/, "");
    if (h.startsWith("#")) th.className = "num";
    tr.append(th);
  }
  table.append(tr);
  for (const r of rows) {
    const row = document.createElement("tr");
    r.forEach((v, i) => cell(row, v, head[i].startsWith("#") ? "num" : r.cls && r.cls[i]));
    table.append(row);
  }
}

// As `streamfer lag`: "∞" when the rates are known but the group does not gain on producers.
function eta(seconds, lag, consumed, produced) {
  const known = consumed !== null && consumed !== undefined && produced !== null && produced !== undefined;
  if (seconds === null || seconds === undefined) return lag > 0 ? (known ? "∞" : "?") : "0s";
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

function rate(v) {
  return v === null || v === undefined ? "?" : formatNumber(v, "/s");
}

function render(state) {
  const now = state.points.length ? state.points[state.points.length - 1].t : Date.now() / 1000;
  const windowT = [Math.max(now - WINDOW_S, points.length ? points[0].t : now - 60), now];
  document.getElementById("title").textContent = state.title;
  document.title = state.title + " dashboard";

  charts.lag.update(seriesOf((p) => p.lag), windowT);
  charts.throughput.update([
    { name: "events in", points: points.map((p) => [p.t, p.events_in]) },
    { name: "predictions out", points: points.map((p) => [p.t, p.predictions_out]) },
    { name: "late", points: points.map((p) => [p.t, p.late]) },
  ], windowT);
  charts.latency.update(seriesOf((p) => p.e2e, ["p50", "p95", "p99"]), windowT);
  charts.deadLetters.update([
    { name: "all reasons", points: points.map((p) => [p.t, p.dead_letters_total]) },
    ...seriesOf((p) => p.dead_letters),
  ], windowT);
  charts.batch.update(seriesOf((p) => p.batch, ["mean", "p50", "p95"]), windowT);
  charts.stages.update(seriesOf((p) => p.stages), windowT);
  charts.prequential.update(seriesOf((p) => p.prequential), windowT);
  charts.freshness.update(seriesOf((p) => p.freshness, ["p50", "p99"]), windowT);
  charts.drift.update(
    [{ name: "drift alerts", points: points.map((p) => [p.t, p.drift_alerts]) }], windowT);

  // Lag detail: one row per group (totals), partitions in the tooltip.
  const lagRows = ((state.lag && state.lag.groups) || []).map((g) => {
    const row = [g.group, g.state, String(g.members), g.lag.toLocaleString("en-US"),
                 rate(g.consume_rate), rate(g.produce_rate),
                 eta(g.eta_s, g.lag, g.consume_rate, g.produce_rate)];
    return row;
  });
  fillTable(document.getElementById("lag-table"),
            ["group", "state", "#members", "#lag", "#consumed", "#produced", "#ETA"], lagRows);
  const lagError = document.getElementById("lag-error");
  lagError.hidden = !state.lag_error;
  lagError.textContent = state.lag_error ? "lag unavailable: " + state.lag_error : "";

  const modelRows = [];
  for (const t of state.targets) {
    const adaptation = t.adaptation.length
      ? t.adaptation.map((a) => `v${a.version}${a.mode ? " (" + a.mode + ")" : ""}`).join(", ")
      : (state.learner ? "none" : "no learner");
    const shadow = (t.shadows || []).map((s) => `v${s.version}`).join(", ") || "–";
    for (const m of t.models) {
      modelRows.push([t.url, `${m.model} v${m.version}`, shadow, m.provider, adaptation]);
    }
    if (!t.models.length && t.adaptation.length) modelRows.push([t.url, "–", "–", "–", adaptation]);
  }
  fillTable(document.getElementById("models-table"),
            ["target", "model", "shadow", "provider", "adaptation"], modelRows);

  for (const note of document.querySelectorAll(".no-learner")) note.hidden = state.learner;
  document.getElementById("panel-prequential").dataset.learner = String(state.learner);
  document.getElementById("panel-drift").dataset.learner = String(state.learner);
  fillTable(document.getElementById("drift-table"), ["detector / subject", "#alerts"],
            Object.entries(state.drift).map(([k, v]) => [k, formatNumber(v, "")]));

  const targetRows = state.targets.map((t) => {
    const row = [t.url, t.up ? (t.paused ? "up (paused)" : "up") : "down", t.error || ""];
    row.cls = [null, t.up ? "up" : "down", null];
    return row;
  });
  fillTable(document.getElementById("targets-table"), ["url", "state", "last error"], targetRows);
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch(`/api/state?since=${since}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const state = await response.json();
    if (state.seq < since) points.length = 0; // the server restarted
    for (const p of state.points) points.push(p);
    since = state.seq;
    const cutoff = (points.length ? points[points.length - 1].t : 0) - WINDOW_S;
    while (points.length && points[0].t < cutoff) points.shift();
    render(state);
    status.textContent = "live";
    status.className = "pill live";
    document.getElementById("updated").textContent = "updated " + new Date().toTimeString().slice(0, 8);
  } catch (err) {
    // The dashboard server is away: say so on the page, keep polling.
    status.textContent = "no connection to the dashboard server";
    status.className = "pill stale";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();

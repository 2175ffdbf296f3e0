// everstream console: polls the control plane's REST API once a second and renders it.
"use strict";

const $ = (sel) => document.querySelector(sel);
const fmt = (n) => (n === null || n === undefined) ? "-" : Number(n).toLocaleString("en-US", {maximumFractionDigits: 2});
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const layout = {paper_bgcolor: "#16212d", plot_bgcolor: "#16212d", font: {color: "#e6edf3"},
                margin: {l: 50, r: 20, t: 10, b: 40}, xaxis: {rangeslider: {visible: false}}};
let panel = "overview";
let selectedTopic = null;

async function get(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function rows(tbody, html) { $(tbody).innerHTML = html.join(""); }

async function refreshSummary() {
  const s = await get("/api/summary");
  $("#title").textContent = s.title;
  $("#events-captured").textContent = fmt(s.events_captured);
  $("#capture-rate").textContent = fmt(s.capture_rate);
  $("#alerts-total").textContent = fmt(s.alerts_total);
  $("#alerts-badge").textContent = fmt(s.alerts_total);
  $("#uptime").textContent = `${Math.round(s.uptime_s)} s`;
  rows("#captures-table tbody", s.captures.map((c) =>
    `<tr><td>${esc(c.topic)}</td><td>${esc(c.source)}</td><td>${fmt(c.events)}</td><td>${fmt(c.rate)}</td></tr>`));
  const types = Object.keys(s.alerts).sort();
  const sel = $("#alert-type");
  for (const t of types) {
    if (![...sel.options].some((o) => o.value === t)) sel.add(new Option(t, t));
  }
  Plotly.react("alerts-chart", [{type: "bar", x: types, y: types.map((t) => s.alerts[t]), marker: {color: "#f0a35e"}}],
               {...layout, xaxis: {}}, {displayModeBar: false});
}

async function refreshPipelines() {
  const ps = await get("/api/pipelines");
  rows("#pipelines-table tbody", ps.map((p) => `<tr data-pipeline="${esc(p.name)}">
    <td title="${esc(p.description)}">${esc(p.name)}</td><td class="events-in">${fmt(p.events_in)}</td>
    <td>${fmt(p.rate)}</td><td>${fmt(p.events_out)}</td><td>${fmt(p.latency_p50_ms)} ms</td>
    <td>${fmt(p.latency_p99_ms)} ms</td><td>${fmt(p.lag)}</td><td>${fmt(p.late_events)}</td>
    <td>${fmt(p.dead_letters)}</td><td class="${p.error ? "error" : ""}">${esc(p.error || "running")}</td></tr>`));
}

async function refreshBars() {
  let bars;
  try { bars = await get("/api/tail/bars_1m?limit=5000"); } catch (e) { return; }
  const sel = $("#bar-symbol");
  const symbols = [...new Set(bars.map((b) => b.symbol))].sort();
  for (const s of symbols.slice(0, 50)) {
    if (![...sel.options].some((o) => o.value === s)) sel.add(new Option(s, s));
  }
  const sym = sel.value || symbols[0];
  const latest = new Map();  // newest row per window (early updates, then the final one)
  for (const b of bars) {
    if (b.symbol === sym && !latest.has(b.window_start)) latest.set(b.window_start, b);
  }
  const xs = [...latest.keys()].sort();
  const pick = (k) => xs.map((x) => latest.get(x)[k]);
  Plotly.react("bars-chart", [
    {type: "candlestick", x: xs, open: pick("open"), high: pick("high"), low: pick("low"), close: pick("close"),
     name: sym},
    {type: "scatter", mode: "lines", x: xs, y: pick("vwap"), name: "vwap", line: {color: "#7aa2f7"}},
  ], layout, {displayModeBar: false});
}

async function refreshAlerts() {
  const t = $("#alert-type").value;
  const alerts = await get(`/api/alerts?limit=200${t ? `&alert_type=${encodeURIComponent(t)}` : ""}`);
  rows("#alerts-table tbody", alerts.map((a) => `<tr class="alert" data-type="${esc(a.alert_type)}">
    <td>${esc(a.ts)}</td><td>${esc(a.alert_type)}</td><td>${esc(a.key)}</td><td>${fmt(a.score)}</td>
    <td class="detail">${esc(a.detail)}</td></tr>`));
}

async function refreshTopics() {
  const ts = await get("/api/topics");
  rows("#topics-table tbody", ts.map((t) => `<tr class="clickable" data-topic="${esc(t.name)}">
    <td>${esc(t.name)}</td><td>${t.partitions}</td><td>${fmt(t.records)}</td></tr>`));
  if (selectedTopic) {
    const recs = await get(`/api/topics/${encodeURIComponent(selectedTopic)}/records?limit=20`);
    $("#records-title").textContent = `Newest records of ${selectedTopic}`;
    $("#records").textContent = recs.map((r) => JSON.stringify(r)).join("\n");
  }
}

async function tick() {
  try {
    await refreshSummary();
    if (panel === "overview") { await refreshPipelines(); await refreshBars(); }
    if (panel === "alerts") await refreshAlerts();
    if (panel === "topics") await refreshTopics();
  } catch (e) {
    console.error(e);
  }
}

for (const b of document.querySelectorAll(".tab")) {
  b.addEventListener("click", () => {
    panel = b.dataset.panel;
    for (const x of document.querySelectorAll(".tab")) x.classList.toggle("active", x === b);
    for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === `panel-${panel}`);
    tick();
  });
}
$("#topics-table").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-topic]");
  if (tr) { selectedTopic = tr.dataset.topic; tick(); }
});
$("#alert-type").addEventListener("change", tick);
$("#bar-symbol").addEventListener("change", tick);
tick();
setInterval(tick, 1000);

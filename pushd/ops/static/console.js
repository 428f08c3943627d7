// The operator console (pushd/ops/console.py). Every second it reads GET /metrics (the
// Prometheus text format) and keeps five minutes of samples; rates are counter deltas
// over the time between two reads, p50/p99 come from the delta of the latency
// histogram's buckets (what PromQL's histogram_quantile does). No chart library: each
// chart is a line on a <canvas>.
"use strict";

const WINDOW_SECONDS = 300;
const POLL_MS = 1000;
const KEY_STORAGE = "pushd-key";
const BREAKER = { 0: ["closed", "ok"], 1: ["half-open", "warn"], 2: ["open", "bad"] };

// Each chart: its id, label, unit, and how to read its value from (previous, current)
// scrapes and the seconds between them; null when the series does not exist (yet).
const CHARTS = [
  ["accepted", "accepted / s", "/s", (p, c, dt) => rate(p, c, dt, "pushd_notifications_accepted_total")],
  ["delivered", "delivered / s (frame handed to a socket)", "/s",
    (p, c, dt) => rate(p, c, dt, "pushd_delivery_latency_seconds_count")],
  ["p50", "p50 accept → frame latency", "ms", (p, c) => quantileMs(p, c, 0.5)],
  ["p99", "p99 accept → frame latency", "ms", (p, c) => quantileMs(p, c, 0.99)],
  ["sockets", "open sockets (WebSocket + SSE)", "", (p, c) => sum(c, "pushd_websocket_connections")],
];

const series = Object.fromEntries(CHARTS.map(([id]) => [id, []]));
let previous = null;
let role = null;

function $(id) { return document.getElementById(id); }
function key() { return sessionStorage.getItem(KEY_STORAGE); }
function authorized(extra = {}) { return { headers: { Authorization: "Bearer " + key(), ...extra } }; }

// --- Prometheus text format -------------------------------------------------------------

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

// name -> [{labels, value}]
function parseMetrics(text) {
  const samples = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const found = SAMPLE.exec(line);
    if (!found) continue;
    const labels = {};
    for (const [, name, value] of (found[2] || "").matchAll(LABEL)) labels[name] = value.replace(/\\(.)/g, "$1");
    if (!samples.has(found[1])) samples.set(found[1], []);
    samples.get(found[1]).push({ labels, value: Number(found[3]) });
  }
  return samples;
}

function sum(samples, name) {
  const found = samples.get(name);
  return found ? found.reduce((total, sample) => total + sample.value, 0) : null;
}

function rate(previousSamples, samples, seconds, name) {
  const now = sum(samples, name);
  if (now === null || !previousSamples) return null;
  const before = sum(previousSamples, name) ?? 0;
  return Math.max(0, now - before) / seconds;  // a restart resets counters: no negative rate
}

// The latency histogram's buckets summed over its labels: [[le, cumulative count]].
function buckets(samples) {
  const byBound = new Map();
  for (const { labels, value } of samples.get("pushd_delivery_latency_seconds_bucket") || []) {
    const bound = labels.le === "+Inf" ? Infinity : Number(labels.le);
    byBound.set(bound, (byBound.get(bound) || 0) + value);
  }
  return [...byBound.entries()].sort((a, b) => a[0] - b[0]);
}

// histogram_quantile over the observations made between two scrapes, in milliseconds;
// null when there were none (no traffic: no latency to show).
function quantileMs(previousSamples, samples, q) {
  if (!previousSamples) return null;
  const before = new Map(buckets(previousSamples));
  const delta = buckets(samples).map(([bound, count]) => [bound, count - (before.get(bound) || 0)]);
  if (!delta.length) return null;
  const total = delta[delta.length - 1][1];
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0, lowerCount = 0;
  for (const [bound, count] of delta) {
    if (count >= rank) {
      if (bound === Infinity) return lowerBound * 1000;  // beyond the last finite bucket
      return (lowerBound + (bound - lowerBound) * (rank - lowerCount) / Math.max(count - lowerCount, 1e-9)) * 1000;
    }
    lowerBound = bound; lowerCount = count;
  }
  return lowerBound * 1000;
}

// --- charts -------------------------------------------------------------------------------

function buildCharts() {
  $("charts").replaceChildren(...CHARTS.map(([id, label]) => {
    const card = document.createElement("div");
    card.className = "card";
    card.id = "chart-" + id;
    const title = document.createElement("div");
    title.className = "muted";
    title.textContent = label;
    const value = document.createElement("div");
    value.className = "value";
    value.id = "value-" + id;
    value.textContent = "no data";
    const canvas = document.createElement("canvas");
    canvas.id = "canvas-" + id;
    canvas.width = 360; canvas.height = 80;
    card.append(title, value, canvas);
    return card;
  }));
}

function format(value, unit) {
  if (value === null) return "no data";
  const digits = unit === "ms" ? (value < 10 ? 2 : 1) : (value < 10 && value % 1 ? 1 : 0);
  return value.toLocaleString(undefined, { maximumFractionDigits: digits }) + (unit ? " " + unit : "");
}

function draw(id) {
  const canvas = $("canvas-" + id), context = canvas.getContext("2d");
  const points = series[id], now = performance.now() / 1000;
  const values = points.map(([, value]) => value).filter(value => value !== null);
  const top = Math.max(1, ...values);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#98a2b3";
  context.font = "10px system-ui";
  context.fillText(top.toLocaleString(undefined, { maximumFractionDigits: 1 }), 2, 10);
  context.beginPath();
  let drawing = false;
  for (const [at, value] of points) {
    if (value === null) { drawing = false; continue; }
    const x = canvas.width * (1 - (now - at) / WINDOW_SECONDS);
    const y = canvas.height - 2 - value / top * (canvas.height - 14);
    if (drawing) context.lineTo(x, y); else context.moveTo(x, y);
    drawing = true;
  }
  context.strokeStyle = "#3b6fd4";
  context.lineWidth = 1.5;
  context.stroke();
  // The latest value as a dot: a line needs two points, and a lone one must show too.
  const last = points[points.length - 1];
  if (last && last[1] !== null) {
    context.fillStyle = "#3b6fd4";
    context.beginPath();
    context.arc(canvas.width - 2, canvas.height - 2 - last[1] / top * (canvas.height - 14), 2, 0, 2 * Math.PI);
    context.fill();
  }
}

function record(samples, at) {
  const seconds = previous ? at - previous.at : 1;
  for (const [id, , unit, read] of CHARTS) {
    const value = read(previous && previous.samples, samples, seconds);
    const points = series[id];
    points.push([at, value]);
    while (points.length && points[0][0] < at - WINDOW_SECONDS) points.shift();
    const cell = $("value-" + id);
    cell.textContent = format(value, unit);
    cell.classList.toggle("nodata", value === null);
    // For tests and curious operators: the highest value of the window.
    const peak = Math.max(0, ...points.map(([, v]) => v ?? 0));
    $("chart-" + id).dataset.peak = String(peak);
    draw(id);
  }
  $("chart-accepted").dataset.total = String(sum(samples, "pushd_notifications_accepted_total") ?? "");
  showChannels(samples);
  previous = { samples, at };
}

// Sends per outcome of a channel over the window: (sent, failed) where failed counts
// permanent errors, transient ones and gone addresses.
function outcomes(samples, name) {
  const counted = { sent: 0, failed: 0 };
  for (const { labels, value } of samples.get("pushd_channel_attempts_total") || []) {
    if (labels.channel === name) counted[labels.outcome === "sent" ? "sent" : "failed"] += value;
  }
  return counted;
}

function showChannels(samples) {
  const channels = new Map();
  const channel = name => channels.get(name) || channels.set(name, { due: null, providers: [] }).get(name);
  for (const { labels, value } of samples.get("pushd_channel_queue_due") || []) channel(labels.channel).due = value;
  for (const { labels } of samples.get("pushd_channel_attempts_total") || []) channel(labels.channel);
  for (const { labels, value } of samples.get("pushd_channel_breaker_state") || []) {
    channel(labels.channel).providers.push([labels.provider, value]);
  }
  const rows = [...channels.entries()].sort().map(([name, { due, providers }]) => {
    const row = document.createElement("tr");
    const { sent, failed } = outcomes(samples, name);
    const cells = [name, due === null ? "–" : due.toLocaleString(), sent.toLocaleString(),
      failed.toLocaleString()].map(text => {
      const cell = document.createElement("td");
      cell.textContent = text;
      return cell;
    });
    const breakers = document.createElement("td");
    for (const [provider, state] of providers) {
      const [word, style] = BREAKER[state] || ["unknown", "warn"];
      const item = document.createElement("span");
      item.className = style;
      item.textContent = `${provider}: ${word} `;
      breakers.append(item);
    }
    row.append(...cells, breakers);
    return row;
  });
  $("channels").tBodies[0].replaceChildren(...rows);
  $("no-channels").hidden = rows.length > 0;
}

// --- polling ------------------------------------------------------------------------------

async function fetchJson(path, init) {
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

async function pollMetrics() {
  if (!key() || role === null) return;
  try {
    const response = await fetch("/metrics", authorized());
    if (!response.ok) throw new Error("/metrics answered " + response.status);
    record(parseMetrics(await response.text()), performance.now() / 1000);
    $("error").textContent = "";
  } catch (error) {
    $("error").textContent = "Cannot read /metrics: " + error.message;
  }
}

async function pollStats() {
  if (!key()) return;
  try {
    const stats = await fetchJson("/api/stats", authorized());
    if (role !== stats.key_role) showRole(stats.key_role);
    $("uptime").textContent = new Date(stats.uptime_seconds * 1000).toISOString().substring(11, 19);
    $("bus").textContent = stats.bus_healthy ? "connected" : "DOWN";
    $("bus").className = stats.bus_healthy ? "ok" : "bad";
  } catch (error) {
    $("error").textContent = "Cannot read /api/stats: " + error.message;
  }
}

// What the key's role may see: a reader cannot send; only an admin lists API keys.
function showRole(newRole) {
  role = newRole;
  $("role").textContent = role;
  $("live").hidden = false;
  $("send-section").hidden = role === "reader";
  $("keys-section").hidden = role !== "admin";
  $("failures-section").hidden = role !== "admin";
  if (role === "admin") { loadKeys(); loadFailures(); }
}

function row(texts) {
  const line = document.createElement("tr");
  for (const text of texts) {
    const cell = document.createElement("td");
    cell.textContent = text ?? "–";
    line.append(cell);
  }
  return line;
}

// Admin only: the route names users and notifications of every category.
async function loadFailures() {
  if (role !== "admin") return;
  try {
    const { items } = await fetchJson("/api/channel-deliveries/failed?limit=20", authorized());
    $("failures").tBodies[0].replaceChildren(...items.map(item => row([
      item.failed_at, item.channel, item.provider, item.error, item.attempts,
      item.notification_id, item.user_id,
    ])));
    $("no-failures").hidden = items.length > 0;
  } catch (error) {
    $("error").textContent = "Cannot read the failed deliveries: " + error.message;
  }
}

async function loadKeys() {
  try {
    const { items } = await fetchJson("/api/keys", authorized());
    $("keys").tBodies[0].replaceChildren(...items.filter(item => !item.revoked_at)
      .map(item => row([item.name, item.role, item.id, item.created_at])));
  } catch (error) {
    $("error").textContent = "Cannot list the API keys: " + error.message;
  }
}

async function sendTest(event) {
  event.preventDefault();
  const body = { user_id: $("send-user").value.trim(), title: $("send-title").value };
  if ($("send-body").value) body.body = $("send-body").value;
  $("send-result").textContent = "Sending…";
  try {
    const sent = await fetchJson("/api/notifications", {
      method: "POST",
      ...authorized({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    $("send-result").textContent = `Accepted: ${sent.id} (seq ${sent.seq})`;
  } catch (error) {
    $("send-result").textContent = "Refused: " + error.message;
  }
}

function logIn(newKey) {
  sessionStorage.setItem(KEY_STORAGE, newKey);
  role = null;
  previous = null;
  for (const id in series) series[id].length = 0;
  pollStats();
}

buildCharts();
$("login").addEventListener("submit", event => {
  event.preventDefault();
  logIn($("key").value.trim());
});
$("send").addEventListener("submit", sendTest);
// `/console#key=pk_…` logs in too: a fragment never leaves the browser (not sent, not
// logged); it is moved to sessionStorage and removed from the address bar.
const fragmentKey = new URLSearchParams(location.hash.slice(1)).get("key");
if (fragmentKey) history.replaceState(null, "", location.pathname);
if (fragmentKey) logIn(fragmentKey); else pollStats();
setInterval(pollMetrics, POLL_MS);
setInterval(pollStats, 5 * POLL_MS);
setInterval(loadFailures, 2 * POLL_MS);
// The page is ready for input (tests wait for it: a click before this would submit the form).
document.documentElement.dataset.ready = "true";

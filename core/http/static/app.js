// The trainctl dashboard: reads the JSON API, follows /api/events/stream, draws the loss curve.
"use strict";

const $ = (id) => document.getElementById(id);
const ERROR_EVENTS = new Set(["file_failed", "validation_failed", "disk_full", "config_rejected", "promotion_rejected", "environment_fault"]);
const REFRESH_EVENTS = new Set(["file_detected", "file_claimed", "snapshot_promoted", "rollback", "file_failed",
  "validation_failed", "file_duplicate", "promotion_rejected", "training_completed"]);
let lastStep = null;
let curveTimer = null;

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail ? String(body.detail) : `HTTP ${response.status}`);
  return body;
}

function renderStatus(status) {
  $("state").textContent = status.state;
  $("state").className = `pill ${status.state}`;
  $("paused").hidden = !status.claiming_paused;
  $("pause-toggle").textContent = status.claiming_paused ? "Resume" : "Pause";
  $("model").textContent = status.model_display_name || "";
  $("current-file").textContent = status.current_file || "–";
  const total = status.total_steps, step = status.current_step;
  const percent = total && step !== null ? Math.min(100, (100 * step) / total) : 0;
  $("progress-bar").style.width = `${percent.toFixed(1)}%`;
  $("step").textContent = step === null ? "–" : `${step}/${total ?? "?"}`;
  $("eta").textContent = duration(status.eta_seconds);
  $("loss").textContent = fmt(status.loss, 4);
  $("eval-loss").textContent = fmt(status.eval_loss, 4);
  $("tps").textContent = fmt(status.tokens_per_second, 0);
  $("current-snapshot").textContent = status.current_snapshot || "–";
  if (status.last_error) addError(status.updated_at, status.last_error, true);
  if (step !== lastStep) {
    lastStep = step;
    scheduleCurve();
  }
}

function scheduleCurve() {
  if (curveTimer === null) curveTimer = setTimeout(() => { curveTimer = null; loadCurve(); }, 1000);
}

function polyline(points, scaleX, scaleY, color) {
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map(([x, y]) => `${scaleX(x).toFixed(1)},${scaleY(y).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", color);
  line.setAttribute("stroke-width", "2");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  return line;
}

function drawCurve(curve) {
  const svg = $("loss-chart");
  svg.replaceChildren();
  const all = [...curve.train, ...curve.eval];
  if (!all.length) return;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const scaleX = (x) => 30 + (x1 > x0 ? ((x - x0) / (x1 - x0)) * 560 : 280);
  const scaleY = (y) => 190 - (y1 > y0 ? ((y - y0) / (y1 - y0)) * 175 : 88);
  for (const [y, label] of [[y1, y1.toFixed(3)], [y0, y0.toFixed(3)]]) {
    const text = document.createElementNS("http://www.w3.org/2000/svg", "text");
    text.setAttribute("x", "2"); text.setAttribute("y", String(scaleY(y) + 4));
    text.setAttribute("font-size", "10"); text.setAttribute("fill", "#6b7280");
    text.textContent = label;
    svg.appendChild(text);
  }
  if (curve.train.length) svg.appendChild(polyline(curve.train, scaleX, scaleY, "#2563eb"));
  if (curve.eval.length) svg.appendChild(polyline(curve.eval, scaleX, scaleY, "#ea580c"));
}

async function loadCurve() {
  try {
    const run = await api("/api/runs/latest");
    $("curve-run").textContent = `run ${run.id}`;
    drawCurve(run.loss_curve);
  } catch (error) {
    $("curve-run").textContent = "(no run yet)";
  }
}

function finishedItem(outcome, item) {
  const report = item.report || {};
  const what = report.outcome || outcome;
  const extra = report.snapshot ? ` → ${report.snapshot}` : report.error ? `: ${report.error}` : "";
  return el("li", `${item.file}: ${what}${extra}`, outcome === "done" ? "ok" : "bad");
}

async function loadQueue() {
  const queue = await api("/api/queue?limit=10");
  const inbox = $("queue-inbox");
  inbox.replaceChildren(...queue.processing.map((p) => el("li", `${p.file} (in progress, attempt ${p.attempts})`)),
    ...queue.inbox.map((f) => el("li", `${f.path} (${f.priority}, ${f.bytes} bytes)`)));
  if (!inbox.children.length) inbox.appendChild(el("li", "(inbox empty)", "muted"));
  const finished = ["done", "failed", "rejected"].flatMap((o) => queue[o].map((item) => finishedItem(o, item)));
  $("queue-finished").replaceChildren(...finished.slice(0, 15));
}

function button(label, onClick) {
  const node = el("button", label);
  node.addEventListener("click", () => onClick().catch((error) => addError(null, error.message, false)));
  return node;
}

function gateText(gate) {
  if (!gate) return "–";
  if (typeof gate !== "object") return String(gate);
  return gate.verdict || gate.decision || (gate.passed === undefined ? JSON.stringify(gate) : gate.passed ? "passed" : "refused");
}

async function loadSnapshots() {
  const data = await api("/api/snapshots");
  const rows = data.snapshots.map((s) => {
    const row = el("tr");
    row.dataset.id = s.id;
    row.append(el("td", s.current ? "●" : "", "ok"), el("td", s.id, "id"), el("td", s.source_file || "–"),
      el("td", s.steps ?? "–"), el("td", fmt(s.last_loss, 4)), el("td", fmt(s.eval_loss, 4)), el("td", gateText(s.gate)));
    const actions = el("td");
    if (!s.current) actions.appendChild(button("Roll back", () => post("/api/rollback", { snapshot: s.id })));
    actions.appendChild(button(s.pinned ? "Unpin" : "Pin", () => post(`/api/snapshots/${encodeURIComponent(s.id)}/${s.pinned ? "unpin" : "pin"}`)));
    row.appendChild(actions);
    return row;
  });
  $("snapshots").tBodies[0].replaceChildren(...rows);
}

async function post(path, body) {
  const options = { method: "POST" };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers = { "Content-Type": "application/json" };
  }
  const result = await api(path, options);
  await refresh();
  return result;
}

const seenErrors = new Set();
function addError(ts, text, fromStatus) {
  if (seenErrors.has(text)) return;
  seenErrors.add(text);
  const list = $("errors");
  list.prepend(el("li", `${ts ? ts.replace("T", " ").slice(0, 19) + " " : ""}${text}`, "bad"));
  while (list.children.length > 20) list.lastChild.remove();
}

function onEvent(event) {
  if (ERROR_EVENTS.has(event.type)) {
    const detail = event.error || (event.problems || []).join("; ") || event.reason || "";
    addError(event.ts, `${event.type}: ${event.file || ""} ${detail}`.trim(), false);
  }
  if (REFRESH_EVENTS.has(event.type)) {
    refresh();
    scheduleCurve();
  }
}

async function refresh() {
  await Promise.all([loadQueue(), loadSnapshots()]).catch((error) => addError(null, error.message, false));
}

async function upload(file) {
  const out = $("upload-result");
  out.className = "result";
  out.textContent = `uploading ${file.name}…`;
  const query = `name=${encodeURIComponent(file.name)}&priority=${$("priority").value}`;
  const response = await fetch(`/api/files?${query}`, { method: "POST", body: file, headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (response.ok) {
    const v = body.validation;
    out.className = "result ok";
    out.textContent = `${body.path}: ${v.good_rows} good rows, ${v.bad_rows} bad, about ${v.estimate ? v.estimate.steps : "?"} steps`;
  } else {
    out.className = "result bad";
    const bad = body.validation ? body.validation.bad_lines.slice(0, 20).map((b) => `line ${b.line}: ${b.reason}`) : [];
    out.textContent = [`refused (${response.status}): ${body.detail || ""}`, ...bad].join("\n");
  }
  refresh();
}

function setupUpload() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    for (const file of e.dataTransfer.files) upload(file);
  });
  $("file-input").addEventListener("change", (e) => { for (const file of e.target.files) upload(file); e.target.value = ""; });
}

async function start() {
  $("token").value = localStorage.getItem("trainctl-token") || "";
  $("token").addEventListener("change", () => localStorage.setItem("trainctl-token", $("token").value.trim()));
  $("pause-toggle").addEventListener("click", () =>
    post($("pause-toggle").textContent === "Pause" ? "/api/pause" : "/api/resume").catch((e) => addError(null, e.message, false)));
  setupUpload();
  renderStatus(await api("/api/status"));
  const recent = await api("/api/events?limit=100");
  recent.events.forEach((event) => { if (ERROR_EVENTS.has(event.type)) onEvent(event); });
  await refresh();
  loadCurve();
  // EventSource cannot send an Authorization header: off loopback the stream takes the token as ?token=.
  const token = $("token").value.trim();
  const stream = new EventSource(`/api/events/stream?after=${recent.last_id}${token ? `&token=${encodeURIComponent(token)}` : ""}`);
  stream.onopen = () => { $("live").textContent = "● live"; $("live").className = "ok"; };
  stream.onerror = () => { $("live").textContent = "○ reconnecting"; $("live").className = "muted"; };
  stream.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
  stream.onmessage = (e) => onEvent(JSON.parse(e.data));
}

start().catch((error) => addError(null, error.message, false));

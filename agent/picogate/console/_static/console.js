// Picogate operator console: one page, no build step, no library.  It reads the gateway's local
// API (/api/v1/…) and the console's own endpoints (/console/api/…), and follows changes on the
// local API's live stream (/api/v1/events), for the devices the page shows.
"use strict";

const S = { user: null, role: null, csrf: "", source: null, page: "plant",
  points: new Map(), devices: new Map(), rules: null, alarms: [], trendKey: null, lastChange: new Map(),
  files: [], watchTimer: null, streamDevices: null };
const ROLES = { viewer: 1, operator: 2, engineer: 3 };
const $ = (id) => document.getElementById(id);
const can = (role) => ROLES[S.role] >= ROLES[role];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `${r.status} ${r.statusText}` }; }
  if (r.status === 401 && path !== "/console/api/login" && path !== "/console/api/session") showLogin();
  return { status: r.status, ok: r.ok, data };
}

function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) >= 100 ? 1 : 2);
  return String(v);
}
function fmtTime(ms) { return ms ? new Date(ms).toLocaleTimeString() : "—"; }
function fmtDate(ms) { return ms ? new Date(ms).toLocaleString() : "—"; }
function fmtAge(ms) {
  if (!ms) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h`;
}
function ruleLabel(r) { return r.name || (r.file ? `${r.file}:${r.line}` : r.rule || r.id); }

// ------------------------------------------------------------------ login

function showLogin() {
  S.user = null;
  if (S.source) { S.source.close(); S.source = null; }
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "login";
  $("nav").hidden = true; $("logout").hidden = true; $("who").textContent = "";
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  const r = await call("POST", "/console/api/login", { user: $("login-user").value, password: $("login-password").value });
  if (!r.ok) { $("login-error").textContent = r.data.error || "login failed"; return; }
  $("login-password").value = "";
  start(r.data);
});

$("logout").addEventListener("click", async () => { await call("POST", "/console/api/logout", {}); showLogin(); });

async function start(session) {
  S.user = session.user; S.role = session.role; S.csrf = session.csrf;
  $("who").textContent = `${S.user} (${S.role})`;
  $("nav").hidden = false; $("logout").hidden = false;
  $("write-form").hidden = !can("operator"); $("write-viewer").hidden = can("operator");
  for (const b of ["editor-check", "editor-replay", "editor-save"]) $(b).disabled = !can("engineer");
  await loadSnapshot();
  go(location.hash.slice(1) || "plant");
  setInterval(() => { if (S.user) { refreshAlarmCount(); if (S.page === "plant") renderAges(); } }, 5000);
}

// ------------------------------------------------------------------ navigation

function go(page) {
  if (!$(page) || page === "login") page = "plant";
  S.page = page;
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== page;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  ({ plant: renderPlant, alarms: loadAlarms, rules: loadRules, editor: loadEditor, writes: loadWrites, health: loadHealth }[page])();
  watch();
}
window.addEventListener("hashchange", () => { if (S.user) go(location.hash.slice(1)); });

// ------------------------------------------------------------------ live updates

// The local API's live stream (/api/v1/events), for the devices the page shows: on the plant page
// those of the rows shown (at most MAX_ROWS), elsewhere none but the first (alarms, rules, writes
// and status come with any stream).  Opened again when that set changes.
const MAX_ROWS = 500;

function wantedDevices() {
  if (S.page !== "plant") return [...S.devices.keys()].slice(0, 1);
  const seen = new Set();
  for (const r of document.querySelectorAll("#plant-table tbody tr")) if (!r.hidden) seen.add(S.points.get(r.dataset.key).device);
  return [...seen];
}

function watch() {
  clearTimeout(S.watchTimer);
  S.watchTimer = setTimeout(() => {
    const devices = wantedDevices().sort().join(",");
    if (S.source && S.streamDevices === devices) return;
    openStream(devices);
  }, 200);
}

function openStream(devices) {
  if (S.source) S.source.close();
  S.streamDevices = devices;
  const src = new EventSource(`/api/v1/events${devices ? "?devices=" + encodeURIComponent(devices) : ""}`);
  S.source = src;
  src.addEventListener("snapshot", (ev) => {
    let unknown = false;
    for (const d of JSON.parse(ev.data).devices) for (const p of d.points) { if (S.points.has(p.key)) setPoint(p); else unknown = true; }
    if (unknown) loadSnapshot().then(() => { if (S.page === "plant") renderPlant(); });
  });
  src.addEventListener("points", (ev) => { for (const p of JSON.parse(ev.data).points) setPoint(p); });
  src.addEventListener("devices", (ev) => {
    for (const d of JSON.parse(ev.data).devices) { S.devices.set(d.name, { ...(S.devices.get(d.name) || {}), ...d }); refreshDevice(d.name); }
  });
  src.addEventListener("alerts", () => { refreshAlarmCount(); if (S.page === "alarms") loadAlarms(); });
  src.addEventListener("rules", (ev) => { S.rules = JSON.parse(ev.data); if (S.page === "rules") renderRules(S.rules); });
  src.addEventListener("writes", (ev) => {
    S.ruleWrites = (S.ruleWrites || []).concat(JSON.parse(ev.data).writes).slice(-100);
    if (S.page === "writes") loadWrites();
  });
  src.addEventListener("status", () => { if (S.page === "health") loadHealth(); });
}

function setPoint(p) {
  const old = S.points.get(p.key);
  if (!old) return;
  if (old.value !== p.value) S.lastChange.set(p.key, p.ts);
  Object.assign(old, p);
  updateRow(p.key);
}

function refreshDevice(name) {
  for (const row of document.querySelectorAll("#plant-table tbody tr")) {
    const p = S.points.get(row.dataset.key);
    if (p && p.device === name) row.cells[0].replaceChildren(...deviceCell(name).childNodes);
  }
}

// ------------------------------------------------------------------ plant

async function loadSnapshot() {
  const r = await call("GET", "/api/v1/snapshot");
  if (!r.ok) return;
  S.points.clear(); S.devices.clear();
  for (const d of r.data.devices) {
    S.devices.set(d.name, d);
    for (const p of d.points) S.points.set(p.key, p);
  }
  S.rules = r.data.rules;
  refreshAlarmCount();
}

function deviceCell(name) {
  const d = S.devices.get(name);
  return el("td", {}, name, " ", el("span", { class: `muted state-${d ? d.state : ""}` }, d ? `(${d.state}${d.reason ? ": " + d.reason : ""})` : ""));
}

function renderPlant() {
  const body = $("plant-table").tBodies[0];
  body.replaceChildren();
  for (const [key, p] of S.points) {
    const row = el("tr", { "data-key": key, class: "clickable", onclick: () => openTrend(key) },
      deviceCell(p.device),
      el("td", { title: p.description || "" }, p.point),
      el("td", { class: "num" }), el("td", {}, p.unit || ""), el("td", {}), el("td", {}), el("td", {}),
      el("td", {}, p.writable && can("operator") ? el("button", { class: "small", onclick: (ev) => { ev.stopPropagation(); askWrite(key); } }, "Set…") : ""));
    body.append(row);
    updateRow(key, row);
  }
  filterPlant();
}

function updateRow(key, row) {
  row = row || document.querySelector(`#plant-table tr[data-key="${CSS.escape(key)}"]`);
  if (!row) return;
  const p = S.points.get(key);
  const c = row.cells;
  const before = c[2].textContent;
  c[2].textContent = fmtValue(p.value);
  c[4].textContent = p.quality || "—"; c[4].className = `q-${p.quality}`;
  c[5].textContent = fmtAge(p.ts);
  c[6].textContent = fmtTime(S.lastChange.get(key) || p.published);  // seen here, or last published
  if (before && before !== c[2].textContent) { row.classList.add("flash"); setTimeout(() => row.classList.remove("flash"), 600); }
  if (key === S.trendKey) loadTrend();
}

function renderAges() {
  for (const row of document.querySelectorAll("#plant-table tbody tr")) {
    const p = S.points.get(row.dataset.key);
    if (p && !row.hidden) row.cells[5].textContent = fmtAge(p.ts);
  }
}

function filterPlant() {
  const q = $("plant-search").value.trim().toLowerCase();
  const state = $("plant-state").value;
  let matching = 0, shown = 0;
  for (const row of $("plant-table").tBodies[0].rows) {
    const p = S.points.get(row.dataset.key);
    const d = S.devices.get(p.device);
    const text = `${p.key} ${p.unit} ${p.description || ""}`.toLowerCase();
    const match = !((q && !text.includes(q)) || (state && (!d || d.state !== state)));
    if (match) matching++;
    row.hidden = !match || shown >= MAX_ROWS;
    if (!row.hidden) shown++;
  }
  $("plant-count").textContent = shown < matching
    ? `${shown} of ${matching} matching points shown (of ${S.points.size}): search to narrow it`
    : `${matching} of ${S.points.size} points`;
  watch();
}
$("plant-search").addEventListener("input", filterPlant);
$("plant-state").addEventListener("change", filterPlant);

// ------------------------------------------------------------------ trend

let trendBusy = false;
async function openTrend(key) { S.trendKey = key; $("trend").hidden = false; await loadTrend(); }
$("trend-close").addEventListener("click", () => { S.trendKey = null; $("trend").hidden = true; });

async function loadTrend() {
  if (!S.trendKey || trendBusy) return;
  trendBusy = true;
  try {
    const key = S.trendKey;
    const r = await call("GET", `/console/api/trend?point=${encodeURIComponent(key)}`);
    if (!r.ok || key !== S.trendKey) return;
    const p = S.points.get(key);
    const samples = r.data.samples.slice();
    if (p && typeof p.value === "number" && p.ts && (!samples.length || p.ts > samples[samples.length - 1][0])) samples.push([p.ts, p.value]);
    $("trend-title").textContent = `${key}${r.data.unit ? " (" + r.data.unit + ")" : ""}`;
    $("trend-range").textContent = samples.length ? `${samples.length} samples, ${fmtTime(samples[0][0])} – ${fmtTime(samples[samples.length - 1][0])}` : "no samples yet";
    drawChart($("trend-chart"), samples);
  } finally { trendBusy = false; }
}

function drawChart(svg, samples) {
  const W = 800, H = 240, L = 56, R = 10, T = 10, B = 24;
  const ns = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; return e; };
  svg.replaceChildren();
  if (!samples.length) { svg.append(mk("text", { x: L, y: H / 2 }, "no samples yet")); return; }
  let lo = Math.min(...samples.map((s) => s[1])), hi = Math.max(...samples.map((s) => s[1]));
  if (lo === hi) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const t0 = samples[0][0], t1 = Math.max(samples[samples.length - 1][0], t0 + 1);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    svg.append(mk("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
    svg.append(mk("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtValue(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    svg.append(mk("text", { x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, fmtTime(t)));
  }
  const pts = samples.map((s) => `${x(s[0]).toFixed(1)},${y(s[1]).toFixed(1)}`).join(" ");
  svg.append(mk("polyline", { points: pts, class: "line" }));
}

// ------------------------------------------------------------------ alarms

async function refreshAlarmCount() {
  const r = await call("GET", "/console/api/alarms?history=1");
  if (!r.ok) return;
  const open = r.data.active.filter((a) => !a.acknowledged).length;
  $("alarm-count").textContent = String(open);
  $("alarm-count").hidden = open === 0;
}

async function loadAlarms() {
  const r = await call("GET", "/console/api/alarms?history=200");
  if (!r.ok) return;
  const body = $("alarms-table").tBodies[0];
  body.replaceChildren();
  for (const a of r.data.active) {
    body.append(el("tr", { "data-alarm": a.id },
      el("td", { class: `sev sev-${a.severity}` }, a.severity),
      el("td", {}, fmtDate(a.since)),
      el("td", { title: a.text || "" }, ruleLabel(a), a.text ? el("pre", { class: "muted" }, a.text) : null),
      el("td", {}, a.message),
      el("td", {}, a.acknowledged ? `${a.acked_by}, ${fmtTime(a.acked_at)}` : "no"),
      el("td", {}, !a.acknowledged && can("operator") ? el("button", { class: "ack", onclick: () => ack(a.id) }, "Acknowledge") : "")));
  }
  $("alarms-none").hidden = r.data.active.length > 0;
  const hist = $("history-table").tBodies[0];
  hist.replaceChildren();
  for (const h of r.data.history) {
    hist.append(el("tr", {}, el("td", {}, fmtDate(h.ts)), el("td", {}, h.event), el("td", { class: `sev sev-${h.severity}` }, h.severity),
      el("td", {}, h.rule), el("td", {}, h.message), el("td", {}, h.by || "")));
  }
  refreshAlarmCount();
}

async function ack(id) {
  const r = await call("POST", `/console/api/alarms/${id}/ack`, {});
  if (!r.ok) alert(r.data.error);
  loadAlarms();
}

// ------------------------------------------------------------------ rules

async function loadRules() {
  const [r, w] = await Promise.all([call("GET", "/api/v1/rules"), call("GET", "/api/v1/writes")]);
  if (w.ok) S.ruleWrites = w.data.writes;
  if (r.ok) renderRules(r.data);
}

// A rule's writes among the last writes of the gateway (origin rule:<id>): how many, how many the
// rate limit refused, and the last one with its result.
function writesOf(rule) {
  const mine = (S.ruleWrites || []).filter((w) => w.origin === `rule:${rule}`);
  if (!mine.length) return "";
  const last = mine[mine.length - 1];
  const limited = mine.filter((w) => w.code === "rate_limited").length;
  return `${mine.length} write(s)${limited ? `, ${limited} held back by the rate limit` : ""}; last ${last.key} = ${fmtValue(last.value)}: ${last.code}`;
}

function renderRules(rs) {
  const box = $("reload");
  box.replaceChildren();
  if (!rs.enabled) { box.append("This gateway runs no rules."); return; }
  box.append(el("b", { class: rs.ok ? "ok" : "error" }, rs.ok ? "Rules loaded" : "The last reload failed: the rules before it keep running"),
    " ", el("span", { class: "muted" }, `version ${rs.version || "—"}, loaded ${fmtDate(rs.loaded_ts)}, last attempt ${fmtDate(rs.attempt && rs.attempt.ts)}`));
  for (const e of rs.errors || []) box.append(el("div", { class: "problem" }, el("pre", {}, e.text)));
  for (const w of rs.warnings || []) box.append(el("div", { class: "problem warning" }, el("pre", {}, w.text)));
  const body = $("rules-table").tBodies[0];
  body.replaceChildren();
  for (const rule of rs.rules) {
    body.append(el("tr", { "data-rule": rule.id },
      el("td", {}, ruleLabel(rule)),
      el("td", { class: `state-${rule.state}` }, rule.state),
      el("td", {}, fmtDate(rule.last_fired)),
      el("td", { class: "num" }, rule.fired ?? ""),
      el("td", {}, writesOf(rule.id)),
      el("td", { class: "muted" }, [rule.reason, rule.chattering ? "chattering" : ""].filter(Boolean).join("; ")),
      el("td", {}, el("pre", {}, rule.text || ""))));
  }
}

// ------------------------------------------------------------------ editor

async function loadEditor() {
  const r = await call("GET", "/console/api/rules/files");
  const sel = $("editor-file");
  if (!r.ok) { $("editor-status").textContent = r.data.error; return; }
  const current = sel.value;
  sel.replaceChildren(...r.data.files.map((f) => el("option", { value: f }, f)));
  if (current && r.data.files.includes(current)) sel.value = current;
  if (!$("editor-text").dataset.file || $("editor-text").dataset.file !== sel.value) await openFile(sel.value);
}
$("editor-file").addEventListener("change", () => openFile($("editor-file").value));

async function openFile(name) {
  if (!name) return;
  const r = await call("GET", `/console/api/rules/file?name=${encodeURIComponent(name)}`);
  if (!r.ok) { $("editor-status").textContent = r.data.error; return; }
  $("editor-text").value = r.data.text; $("editor-text").dataset.file = name;
  $("editor-problems").replaceChildren(); $("editor-replay-out").replaceChildren(); $("editor-status").textContent = "";
  S.marks.clear(); drawGutter();
}

function edited() { return { name: $("editor-file").value, text: $("editor-text").value }; }

// Line numbers beside the text; a line with a mistake is marked red (a warning orange), with the
// mistake as its tooltip.
S.marks = new Map();
function drawGutter() {
  const n = $("editor-text").value.split("\n").length;
  const g = $("editor-gutter");
  g.replaceChildren();
  for (let i = 1; i <= n; i++) {
    const mark = S.marks.get(i);
    g.append(mark ? el("span", { class: mark.kind === "error" ? "bad" : "warn", title: mark.text, "data-line": i }, String(i)) : String(i), "\n");
  }
  g.scrollTop = $("editor-text").scrollTop;
}
$("editor-text").addEventListener("input", () => { S.marks.clear(); drawGutter(); });
$("editor-text").addEventListener("scroll", () => { $("editor-gutter").scrollTop = $("editor-text").scrollTop; });

function showProblems(data) {
  const box = $("editor-problems");
  box.replaceChildren();
  S.marks.clear();
  const lines = $("editor-text").value.split("\n");
  for (const [kind, list] of [["error", data.errors || []], ["warning", data.warnings || []]]) {
    for (const e of list) {
      const own = e.file === $("editor-file").value;
      if (own && !(S.marks.get(e.line) || {}).kind) S.marks.set(e.line, { kind, text: e.message });
      const src = own ? (lines[e.line - 1] || "") : "";
      const caret = " ".repeat(Math.max(0, e.col - 1)) + "^" + "~".repeat(Math.max(0, (e.length || 1) - 1));
      box.append(el("div", { class: `problem ${kind}`, "data-line": e.line, onclick: () => jump(e) },
        el("b", {}, `${own ? "line" : e.file + ":"} ${e.line}, column ${e.col}: `), e.message,
        e.suggestion ? el("span", {}, ` — did you mean ${e.suggestion}?`) : null,
        own ? el("pre", {}, `${src}\n${caret}`) : el("pre", {}, e.text)));
    }
  }
  drawGutter();
}

function jump(e) {
  const ta = $("editor-text");
  const lines = ta.value.split("\n");
  let pos = 0;
  for (let i = 0; i < e.line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  pos += Math.max(0, e.col - 1);
  ta.focus(); ta.setSelectionRange(pos, pos + (e.length || 1));
}

$("editor-check").addEventListener("click", async () => {
  const r = await call("POST", "/console/api/rules/check", edited());
  $("editor-replay-out").replaceChildren();
  if (r.status >= 400 && !r.data.errors) { $("editor-status").textContent = r.data.error; return; }
  showProblems(r.data);
  $("editor-status").textContent = r.data.ok ? `OK: ${r.data.rules} rules and LETs in the set` : `${r.data.errors.length} error(s): not saved`;
  $("editor-status").className = r.data.ok ? "ok" : "error";
});

$("editor-source").addEventListener("change", () => { if ($("editor-source").value === "csv") $("editor-csv").click(); });

$("editor-replay").addEventListener("click", async () => {
  const body = edited();
  if ($("editor-source").value === "csv") {
    const f = $("editor-csv").files[0];
    if (!f) { $("editor-csv").click(); return; }
    body.csv = await f.text();
  }
  $("editor-status").textContent = "replaying…"; $("editor-status").className = "";
  const r = await call("POST", "/console/api/rules/replay", body);
  showProblems(r.data);
  const out = $("editor-replay-out");
  out.replaceChildren();
  if (!r.ok) { $("editor-status").textContent = r.data.error || "the file has errors: fix them first"; $("editor-status").className = "error"; return; }
  $("editor-status").textContent = `replayed ${r.data.readings} readings (${r.data.source === "csv" ? "the CSV" : "the last hours"}${r.data.from ? ", " + fmtTime(r.data.from) + " – " + fmtTime(r.data.to) : ""}): ${r.data.lines.length} event(s)`;
  $("editor-status").className = "ok";
  const t = el("table", { id: "replay-table" }, el("thead", {}, el("tr", {}, el("th", {}, "Time"), el("th", {}, "Rule"), el("th", {}, "What"))));
  const tb = el("tbody");
  for (const x of r.data.lines) tb.append(el("tr", {}, el("td", {}, fmtTime(x.ts)), el("td", {}, x.rule), el("td", {}, x.what)));
  if (!r.data.lines.length) tb.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no rule fired on these readings")));
  t.append(tb); out.append(t);
});

$("editor-save").addEventListener("click", async () => {
  const body = edited();
  if (!(await confirmBox(`Save ${body.name}? The gateway loads it at once.`))) return;
  const r = await call("PUT", "/console/api/rules/file", body);
  showProblems(r.data);
  $("editor-status").textContent = r.ok ? `saved ${r.data.saved}: the gateway reloads it` : (r.data.error || "not saved");
  $("editor-status").className = r.ok ? "ok" : "error";
});

// ------------------------------------------------------------------ writes

function confirmBox(text) {
  return new Promise((resolve) => {
    $("confirm-text").textContent = text; $("confirm").hidden = false;
    const done = (v) => { $("confirm").hidden = true; $("confirm-yes").onclick = $("confirm-no").onclick = null; resolve(v); };
    $("confirm-yes").onclick = () => done(true); $("confirm-no").onclick = () => done(false);
  });
}

function parseValue(text) {
  const t = text.trim();
  if (t === "true" || t === "false") return t === "true";
  if (t !== "" && !Number.isNaN(Number(t))) return Number(t);
  return t;
}

async function loadWrites() {
  const sel = $("write-point");
  const current = sel.value;
  sel.replaceChildren(...[...S.points.values()].filter((p) => p.writable).map((p) =>
    el("option", { value: p.key }, `${p.key}${p.unit ? " (" + p.unit + ")" : ""}${p.min !== null || p.max !== null ? ` [${p.min ?? ""}…${p.max ?? ""}]` : ""}`)));
  if (current) sel.value = current;
  const r = await call("GET", "/api/v1/writes");
  if (!r.ok) return;
  const body = $("writes-table").tBodies[0];
  body.replaceChildren();
  for (const w of r.data.writes.slice().reverse()) {
    body.append(el("tr", {}, el("td", {}, fmtTime(w.ts)), el("td", {}, w.key), el("td", {}, fmtValue(w.value)), el("td", {}, w.origin),
      el("td", { class: w.ok ? "ok" : "error" }, w.code + (w.error ? ": " + w.error : "")), el("td", { class: "num" }, w.ms)));
  }
}

function askWrite(key) { location.hash = "writes"; setTimeout(() => { $("write-point").value = key; $("write-value").focus(); }, 50); }

$("write-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("write-point").value, raw = $("write-value").value;
  const [device, point] = [key.slice(0, key.indexOf(".")), key.slice(key.indexOf(".") + 1)];
  if (!(await confirmBox(`Write ${raw} to ${key}? This changes the plant.`))) return;
  const r = await call("POST", "/api/v1/writes", { device, point, value: parseValue(raw) });
  const res = $("write-result");
  res.textContent = r.data.code ? `${r.data.code}${r.data.error ? ": " + r.data.error : ""}` : (r.data.error || "failed");
  res.className = r.ok ? "ok" : "error";
  loadWrites();
});

// ------------------------------------------------------------------ health

async function loadHealth() {
  const [r, g, rules] = await Promise.all([call("GET", "/api/v1/status"), call("GET", "/api/v1"), call("GET", "/api/v1/rules")]);
  if (!r.ok) return;
  if (rules.ok) S.rules = rules.data;
  const s = r.data, h = s.health || {};
  const card = (title, rows) => el("div", { class: "card" }, el("h3", {}, title),
    el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  const sinks = Object.entries(h.sinks || {}).map(([n, x]) => [n, `${x.connected ? "connected" : "NOT connected"}, ${x.depth} waiting`]);
  const rs = S.rules && S.rules.enabled ? S.rules : null;
  $("health-cards").replaceChildren(
    card("Gateway", [["status", h.status || "?"], ["uptime", `${Math.round((h.uptime_s || 0) / 60)} min`],
      ["version", g.ok ? g.data.gateway.version : "?"], ["id", g.ok ? g.data.gateway.id : "?"], ["clock synchronised", s.clock_synced ? "yes" : "no"]]),
    card("Broker and outbox", [...sinks, ["outbox depth", s.outbox.depth], ["dropped", s.outbox.dropped], ["parked", s.outbox.parked],
      ["lost", s.outbox.lost], ["commits failing", s.outbox.failing ? "YES" : "no"]]),
    card("Devices", [["online", s.devices.online], ["offline", s.devices.offline]]),
    card("Writes", Object.entries(s.writes || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v])),
    card("Rules", rs ? [["version", rs.version || "—"], ["last reload", rs.ok ? "ok" : "failed"], ...Object.entries(rs.counts || {})] : [["rules", "none"]]));
}

// ------------------------------------------------------------------ start

(async () => {
  const r = await call("GET", "/console/api/session");
  if (r.ok) start(r.data); else showLogin();
})();

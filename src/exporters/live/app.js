// spanwire live: agent cards, a live session list and a growing waterfall,
// from the live exporter's API (/api/sessions) and stream (/api/live).
// Every text from spans goes into the page as text (textContent), never as
// markup.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const withToken = (path) => token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;

const sessions = new Map();      // id -> summary
const seen = [];                 // [{t, agent, class, ms, error, tokens, cost}] of the last minute
let selected = null;             // the session shown in the waterfall
let spans = [];                  // its spans, in arrival order
let events = [];                 // its GenAI events (gen_ai.* log records), in arrival order
let shown = null;                // the span whose attributes are shown
let pendingSpan = null;          // a span to show once it arrives (from "recent failures")
const failures = [];             // the last failing spans: [{session, span}]
let detailSocket = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function fmtMs(ns) { return (ns / 1e6).toFixed(ns < 1e7 ? 1 : 0) + " ms"; }

function statusOf(s) {
  if (Date.now() * 1e6 - s.updated_ns < 30e9) return "active";
  return s.errors > 0 ? "error" : "ok";
}

// --- sessions -------------------------------------------------------------

function renderSessions() {
  const body = document.querySelector("#sessions tbody");
  const onlyErrors = document.getElementById("only-errors").checked;
  const list = [...sessions.values()].sort((a, b) => b.updated_ns - a.updated_ns)
    .filter((s) => !onlyErrors || s.errors > 0);
  body.replaceChildren(...list.map((s) => {
    const tr = el("tr", "session" + (s.errors > 0 ? " has-error" : "") + (s.session_id === selected ? " selected" : ""));
    tr.dataset.session = s.session_id;
    const tokens = s.tokens || {};
    tr.append(
      el("td", "id", s.session_id),
      el("td", "", [...(s.agents || [])].join(", ")),
      el("td", "spans", s.span_count),
      el("td", "errors", s.errors),
      el("td", "tokens", (tokens.input || 0) + " / " + (tokens.output || 0)),
      el("td", "cost", s.cost ? "$" + s.cost.toFixed(4) : "—"),
      el("td", "status", statusOf(s)),
    );
    tr.dataset.inputTokens = tokens.input || 0;
    tr.dataset.outputTokens = tokens.output || 0;
    tr.addEventListener("click", () => select(s.session_id));
    return tr;
  }));
}

// --- agent cards ----------------------------------------------------------

function pct(sorted, p) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function renderCards() {
  const now = Date.now();
  while (seen.length && now - seen[0].t > 60000) seen.shift();
  const agents = new Map();
  for (const s of sessions.values()) {
    for (const a of s.agents || []) {
      const c = agents.get(a) || { active: 0, inv: [], errors: 0, spans: 0, tokens: 0, cost: 0 };
      if (statusOf(s) === "active") c.active++;
      agents.set(a, c);
    }
  }
  for (const e of seen) {
    const c = agents.get(e.agent);
    if (!c) continue;
    c.spans++;
    if (e.error) c.errors++;
    c.tokens += e.tokens;
    c.cost += e.cost;
    if (e.class === "agent") c.inv.push(e.ms);
  }
  const cards = document.getElementById("cards");
  cards.replaceChildren(...[...agents.entries()].sort().map(([name, c]) => {
    const card = el("div", "card");
    card.dataset.agent = name;
    const lat = c.inv.slice().sort((a, b) => a - b);
    const dl = el("dl");
    const row = (k, v) => dl.append(el("dt", "", k), el("dd", "", v));
    row("active sessions", c.active);
    row("invocations/min", c.inv.length);
    row("p50 / p95", pct(lat, 0.5).toFixed(0) + " / " + pct(lat, 0.95).toFixed(0) + " ms");
    row("error rate", c.spans ? (100 * c.errors / c.spans).toFixed(1) + " %" : "0 %");
    row("tokens/min", c.tokens);
    row("cost/min", "$" + c.cost.toFixed(4));
    card.append(el("h3", "", name), dl);
    return card;
  }));
}

// --- the waterfall --------------------------------------------------------

const CLASSES = ["agent", "model", "tool", "retrieval", "guardrail", "other"];

function renderLegend() {
  document.getElementById("legend").replaceChildren(...CLASSES.map((c) => el("span", c, c)));
}

// Rows are made once per span and kept (rowCache); a redraw only moves the
// rows whose place changed and relabels those whose depth or events
// changed. Bars are placed by CSS from their start and duration (ms after
// the session's first start) over the waterfall's --range.
let rowCache = new Map();        // span id -> {row, label, bar, depth, events}
let originNs = Infinity;         // the start the bars are placed from
let lastRescale = 0;             // when --range last changed (performance.now())
let rescaleTimer = null;

function makeRow(s) {
  const row = el("div", "row " + s.class + (s.error ? " error" : ""));
  row.dataset.spanId = s.span_id;
  row.dataset.class = s.class;
  const label = el("div", "label");
  const track = el("div", "track");
  const bar = el("div", "bar" + (s.error ? " error" : ""));
  bar.title = s.message || "";
  track.append(bar);
  const tokens = s.input_tokens || s.output_tokens ? "  " + s.input_tokens + "→" + s.output_tokens + " tok" : "";
  const meta = el("div", "meta", fmtMs(Math.max(0, s.end_ns - s.start_ns)) + tokens);
  row.append(label, track, meta);
  row.addEventListener("click", () => showAttributes(s));
  bar.style.setProperty("--d", Math.max(0, (s.end_ns - s.start_ns) / 1e6));
  return { row, label, bar, depth: -1, events: -1 };
}

function renderWaterfall() {
  const box = document.getElementById("waterfall");
  if (!selected) { box.replaceChildren(); rowCache = new Map(); originNs = Infinity; box.style.removeProperty("--range"); return; }
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const eventCount = new Map();
  for (const e of events) eventCount.set(e.span_id, (eventCount.get(e.span_id) || 0) + 1);
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent_id && byId.has(s.parent_id)) {
      if (!children.has(s.parent_id)) children.set(s.parent_id, []);
      children.get(s.parent_id).push(s);
    } else {
      roots.push(s);
    }
  }
  const ordered = [];
  const walk = (s, depth) => {
    ordered.push([s, depth]);
    for (const c of (children.get(s.span_id) || []).sort((a, b) => a.start_ns - b.start_ns)) walk(c, depth + 1);
  };
  roots.sort((a, b) => a.start_ns - b.start_ns).forEach((r) => walk(r, 0));
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const s of spans) { t0 = Math.min(t0, s.start_ns); t1 = Math.max(t1, s.end_ns); }
  t1 = Math.max(t1, t0 + 1);
  // An earlier start than any so far moves every bar (rare); else only new
  // bars are placed.
  const moved = t0 !== originNs;
  originNs = t0;
  // The scale has 50% headroom: a growing session is rescaled (every bar
  // restyled, the costly part) only when it outgrows it, and at most every
  // 300 ms; meanwhile bars past the end are clipped.
  const range = (t1 - t0) / 1e6;
  const scale = Number(box.style.getPropertyValue("--range")) || 0;
  if (moved || range > scale || range < scale / 3) {
    const now = performance.now();
    if (moved || !scale || now - lastRescale >= 300) {
      box.style.setProperty("--range", range * 1.5);
      lastRescale = now;
    } else if (!rescaleTimer) {
      rescaleTimer = setTimeout(() => { rescaleTimer = null; redraw(renderWaterfall); }, 300);
    }
  }
  ordered.forEach(([s, depth], i) => {
    let r = rowCache.get(s.span_id);
    const fresh = !r;
    if (!r) { r = makeRow(s); rowCache.set(s.span_id, r); }
    if (fresh || moved) r.bar.style.setProperty("--s", (s.start_ns - t0) / 1e6);
    const n = eventCount.get(s.span_id) || 0;
    if (r.depth !== depth || r.events !== n) {
      r.depth = depth;
      r.events = n;
      r.row.dataset.depth = depth;
      r.label.style.paddingLeft = (depth * 12) + "px";
      const parts = [el("span", "", s.name)];
      if (s.error) parts.push(el("span", "mark", " ✖"));
      if (s.guardrail_intervened) parts.push(el("span", "mark", " ⛔"));
      if (n) parts.push(el("span", "events", " 💬" + n));
      r.label.replaceChildren(...parts);
    }
    r.row.classList.toggle("shown", shown === s.span_id);
    // In place already (the common case: new spans go last), or moved there.
    const at = box.children[i];
    if (at !== r.row) box.insertBefore(r.row, at || null);
  });
  while (box.children.length > ordered.length) box.lastChild.remove();
}

function showAttributes(s) {
  shown = s.span_id;
  document.querySelectorAll("#waterfall .row.shown").forEach((r) => r.classList.remove("shown"));
  const row = document.querySelector('#waterfall .row[data-span-id="' + s.span_id + '"]');
  if (row) { row.classList.add("shown"); row.scrollIntoView({ block: "nearest" }); }
  const box = document.getElementById("attrs");
  box.hidden = false;
  document.getElementById("attrs-title").textContent = s.name + (s.error ? " — " + (s.message || "error") : "");
  const rows = [["class", s.class], ["duration", fmtMs(s.end_ns - s.start_ns)], ["span id", s.span_id]]
    .concat(Object.entries(s.attributes || {}))
    // Its GenAI events (prompts, choices, tool messages), as they came.
    .concat(events.filter((e) => e.span_id === s.span_id).map((e) => ["event " + e.name, e.body]));
  box.querySelector("tbody").replaceChildren(...rows.map(([k, v]) => {
    const tr = el("tr");
    tr.append(el("td", "", k), el("td", "", v));
    return tr;
  }));
}

async function select(id, span) {
  selected = id;
  spans = [];
  events = [];
  shown = null;
  pendingSpan = span || null;
  rowCache = new Map();
  originNs = Infinity;
  document.getElementById("waterfall").replaceChildren();
  document.getElementById("waterfall").style.removeProperty("--range");
  document.getElementById("detail-title").textContent = "Session " + id;
  document.getElementById("attrs").hidden = true;
  renderSessions();
  if (detailSocket) detailSocket.close();
  // The stream sends the spans already held first, then new ones.
  detailSocket = connect("/api/live?session=" + encodeURIComponent(id), (ev) => {
    if (ev.session_id !== selected) return;
    if (ev.type === "spans") {
      spans.push(...ev.spans);
      redraw(renderWaterfall);
      const want = spans.find((s) => s.span_id === (pendingSpan || shown));
      if (want) { pendingSpan = null; redraw(() => showAttributes(want)); }
    } else if (ev.type === "events") {
      events.push(...ev.events);
      redraw(renderWaterfall);
      const open = spans.find((s) => s.span_id === shown);
      if (open) redraw(() => showAttributes(open));
    }
  });
}

// --- recent failures: one click opens the failing span ----------------------

function renderFailures() {
  const list = document.getElementById("failures");
  document.getElementById("no-failures").hidden = failures.length > 0;
  list.replaceChildren(...failures.map(({ session, span }) => {
    const li = el("li", "failure " + span.class);
    li.dataset.session = session;
    li.dataset.spanId = span.span_id;
    const b = el("button", "");
    b.type = "button";
    b.append(el("span", "name", span.name), el("span", "msg", span.message ? " — " + span.message : ""),
      el("span", "where", " · " + span.class + " · session " + session));
    b.addEventListener("click", () => select(session, span.span_id));
    li.append(b);
    return li;
  }));
}

// --- drawing: at most once per frame, however fast events come ------------

const dirty = new Set();
function redraw(what) {
  if (dirty.size === 0) requestAnimationFrame(() => {
    const todo = [...dirty];
    dirty.clear();
    for (const f of todo) f();
  });
  dirty.add(what);
}

// Summaries (cards, the session list, failures) change with every event but
// are read by a person: they are drawn at most four times a second, which
// leaves the frames to the waterfall.
const later = new Set();
let laterTimer = null;
function redrawSoon(what) {
  later.add(what);
  if (laterTimer) return;
  laterTimer = setTimeout(() => {
    laterTimer = null;
    for (const f of later) redraw(f);
    later.clear();
  }, 250);
}

// --- the stream -----------------------------------------------------------

function connect(path, onEvent, onState) {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + withToken(path);
  let ws;
  let retry = 500;
  let closed = false;
  const open = () => {
    ws = new WebSocket(url);
    ws.onopen = () => { retry = 500; onState && onState(true); };
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = () => {
      onState && onState(false);
      if (!closed) setTimeout(open, retry = Math.min(retry * 2, 10000));
    };
  };
  open();
  return { close: () => { closed = true; ws.close(); } };
}

function onLive(ev) {
  if (ev.type === "summary") {
    sessions.set(ev.session_id, ev);
    redrawSoon(renderSessions);
  } else if (ev.type === "spans") {
    const s = sessions.get(ev.session_id);
    const sessionAgent = s && s.agents && s.agents.length ? s.agents[0] : "";
    for (const sp of ev.spans) {
      // A span's own agent name first (collaborators), else its session's.
      const agent = (sp.attributes && sp.attributes["gen_ai.agent.name"]) || sessionAgent;
      seen.push({ t: Date.now(), agent, class: sp.class, ms: (sp.end_ns - sp.start_ns) / 1e6,
        error: sp.error, tokens: (sp.input_tokens || 0) + (sp.output_tokens || 0), cost: sp.cost || 0 });
      if (sp.error) {
        failures.unshift({ session: ev.session_id, span: sp });
        failures.length = Math.min(failures.length, 20);
        redrawSoon(renderFailures);
      }
    }
  } else if (ev.type === "lagged") {
    // Missed events: reload the list.
    loadSessions();
  }
  redrawSoon(renderCards);
}

async function loadSessions() {
  const r = await fetch(withToken("/api/sessions"));
  if (!r.ok) return;
  for (const s of (await r.json()).sessions) sessions.set(s.session_id, s);
  renderSessions();
  renderCards();
  const f = await fetch(withToken("/api/failures"));
  if (!f.ok) return;
  const known = new Set(failures.map((x) => x.span.span_id));
  for (const { session_id, span } of (await f.json()).failures) {
    if (!known.has(span.span_id)) failures.push({ session: session_id, span });
  }
  failures.sort((a, b) => b.span.end_ns - a.span.end_ns);
  failures.length = Math.min(failures.length, 20);
  renderFailures();
}

renderLegend();
document.getElementById("only-errors").addEventListener("change", renderSessions);
const conn = document.getElementById("conn");
connect("/api/live", onLive, (up) => {
  conn.textContent = up ? "live" : "reconnecting…";
  conn.className = "conn " + (up ? "up" : "down");
  if (up) loadSessions();
});
setInterval(() => { renderCards(); renderSessions(); }, 5000);
// A link to one session (`?session=ID`) opens it at once.
if (params.get("session")) select(params.get("session"));

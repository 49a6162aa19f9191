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
    card.append(el("h3", "", name), dl);
    return card;
  }));
}

// --- the waterfall --------------------------------------------------------

const CLASSES = ["agent", "model", "tool", "retrieval", "guardrail", "other"];

function renderLegend() {
  document.getElementById("legend").replaceChildren(...CLASSES.map((c) => el("span", c, c)));
}

function renderWaterfall() {
  const box = document.getElementById("waterfall");
  if (!selected) { box.replaceChildren(); return; }
  const byId = new Map(spans.map((s) => [s.span_id, s]));
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
  const t0 = Math.min(...spans.map((s) => s.start_ns));
  const t1 = Math.max(...spans.map((s) => s.end_ns), t0 + 1);
  box.replaceChildren(...ordered.map(([s, depth]) => {
    const row = el("div", "row " + s.class + (s.error ? " error" : ""));
    row.dataset.spanId = s.span_id;
    row.dataset.depth = depth;
    row.dataset.class = s.class;
    const label = el("div", "label");
    label.style.paddingLeft = (depth * 12) + "px";
    label.append(el("span", "", s.name));
    if (s.error) label.append(el("span", "mark", " ✖"));
    if (s.guardrail_intervened) label.append(el("span", "mark", " ⛔"));
    const track = el("div", "track");
    const bar = el("div", "bar" + (s.error ? " error" : ""));
    bar.style.left = (100 * (s.start_ns - t0) / (t1 - t0)) + "%";
    bar.style.width = Math.max(0.3, 100 * (s.end_ns - s.start_ns) / (t1 - t0)) + "%";
    bar.title = s.message || "";
    track.append(bar);
    const tokens = s.input_tokens || s.output_tokens ? "  " + s.input_tokens + "→" + s.output_tokens + " tok" : "";
    const meta = el("div", "meta", fmtMs(Math.max(0, s.end_ns - s.start_ns)) + tokens);
    row.append(label, track, meta);
    row.addEventListener("click", () => showAttributes(s));
    return row;
  }));
}

function showAttributes(s) {
  const box = document.getElementById("attrs");
  box.hidden = false;
  document.getElementById("attrs-title").textContent = s.name + (s.error ? " — " + (s.message || "error") : "");
  const rows = [["class", s.class], ["duration", fmtMs(s.end_ns - s.start_ns)], ["span id", s.span_id]]
    .concat(Object.entries(s.attributes || {}));
  box.querySelector("tbody").replaceChildren(...rows.map(([k, v]) => {
    const tr = el("tr");
    tr.append(el("td", "", k), el("td", "", v));
    return tr;
  }));
}

async function select(id) {
  selected = id;
  spans = [];
  document.getElementById("detail-title").textContent = "Session " + id;
  document.getElementById("attrs").hidden = true;
  renderSessions();
  if (detailSocket) detailSocket.close();
  // The stream sends the spans already held first, then new ones.
  detailSocket = connect("/api/live?session=" + encodeURIComponent(id), (ev) => {
    if (ev.type === "spans" && ev.session_id === selected) {
      spans.push(...ev.spans);
      renderWaterfall();
    }
  });
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
    renderSessions();
  } else if (ev.type === "spans") {
    const s = sessions.get(ev.session_id);
    const sessionAgent = s && s.agents && s.agents.length ? s.agents[0] : "";
    for (const sp of ev.spans) {
      // A span's own agent name first (collaborators), else its session's.
      const agent = (sp.attributes && sp.attributes["gen_ai.agent.name"]) || sessionAgent;
      seen.push({ t: Date.now(), agent, class: sp.class, ms: (sp.end_ns - sp.start_ns) / 1e6,
        error: sp.error, tokens: (sp.input_tokens || 0) + (sp.output_tokens || 0) });
    }
  } else if (ev.type === "lagged") {
    // Missed events: reload the list.
    loadSessions();
  }
  renderCards();
}

async function loadSessions() {
  const r = await fetch(withToken("/api/sessions"));
  if (!r.ok) return;
  for (const s of (await r.json()).sessions) sessions.set(s.session_id, s);
  renderSessions();
  renderCards();
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

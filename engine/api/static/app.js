// MAOTrade operator's dashboard. No framework: one snapshot from /ui/api/overview, then the
// engine's events from /ui/api/events (server-sent events) keep it current. Every value shown
// comes from the engine; text from the engine is only ever set as textContent.
"use strict";

const state = {
  csrf: null,
  accounts: new Map(),   // account id -> the engine's account view
  risk: null,
  totals: {},
  selected: null,
  fills: [],             // of the selected account, newest first
  history: [],           // balance history of the selected account
  range: "day",
  chart: null,
  series: null,
};
const STATE_CLASS = { ready: "good", syncing: "wait", starting: "wait", restarting: "wait",
  reconnecting: "wait", disconnected: "bad", stopped: "bad" };
const KILL_CLASS = { active: "good", reduce_only: "wait", halted: "bad" };
const KILL_TEXT = { active: "active", reduce_only: "reduce only", halted: "halted" };
const MAX_FEED = 300;

// -- small helpers -------------------------------------------------------------------------
const $ = (sel) => document.querySelector(sel);
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}
const money = (v) => (v === null || v === undefined || v === "") ? "–"
  : Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const price = (v) => (v === null || v === undefined || v === 0) ? "–" : Number(v).toPrecision(6).replace(/\.?0+$/, "");
const qty = (v) => (v === null || v === undefined) ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 6 });
const signClass = (v) => (v > 0 ? "pos" : v < 0 ? "neg" : "");
const hhmmss = (ms) => new Date(ms).toISOString().slice(11, 19);
function numCell(text, cls = "") { return el("td", { class: `num ${cls}`, text }); }
function pnlCell(v) { return numCell(money(v), signClass(Number(v || 0))); }
function pill(text, cls) { return el("span", { class: `pill ${cls}`, text }); }
function emptyRow(table, cols, text) {
  table.append(el("tr", {}, el("td", { class: "empty", colspan: String(cols), text })));
}

function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text;
  t.className = bad ? "toast bad" : "toast";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.add("hidden"), 6000);
}

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const res = await fetch(`/ui/api/${path}`, { credentials: "same-origin", ...options, headers });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(typeof body.detail === "string" ? body.detail : `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}
const post = (path, data) => api(path, { method: "POST", body: JSON.stringify(data || {}) });

// -- login -------------------------------------------------------------------------------
async function login() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar at once
    try {
      state.csrf = (await post("login", { token: decodeURIComponent(match[1]) })).csrf;
      return true;
    } catch (e) {
      $("#login-error").textContent = e.message;
    }
  }
  try {
    state.csrf = (await api("session")).csrf;
    return true;
  } catch (e) {
    return false;
  }
}

function showLogin() {
  $("#login").classList.remove("hidden");
  if (showLogin.wired) return;
  showLogin.wired = true;
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      state.csrf = (await post("login", { token: $("#login-token").value })).csrf;
      $("#login").classList.add("hidden");
      if (start.started) { $("#app").classList.remove("hidden"); await loadOverview(); connectStream(); }
      else start();
    } catch (e) {
      $("#login-error").textContent = e.message;
    }
  });
}

// -- snapshot ----------------------------------------------------------------------------
async function loadOverview() {
  const data = await api("overview");
  state.accounts = new Map(data.accounts.map((a) => [a.account, { ...a, fetched: Date.now() }]));
  state.risk = data.risk;
  state.totals = data.totals;
  if (!state.selected || !state.accounts.has(state.selected)) state.selected = data.accounts.length ? data.accounts[0].account : null;
  if (!loadOverview.feedShown) {
    loadOverview.feedShown = true;
    for (const ev of data.events) addFeed(ev, false);
  }
  renderAll();
}

let refreshTimer = null;
function refreshSoon() {  // several events in a burst cost one snapshot
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadOverview().then(loadHistory).catch((e) => toast(e.message, true)), 250);
}

async function loadHistory() {
  if (!state.selected) return;
  const data = await api(`accounts/${encodeURIComponent(state.selected)}/history`);
  state.history = data.points;
  state.fills = data.fills.slice().reverse();
  renderDetail();
  renderChart();
}

// -- rendering ---------------------------------------------------------------------------
function renderAll() {
  renderTotals();
  renderAccounts();
  renderDetail();
  renderKill($("#global-kill"), state.risk ? state.risk.kill_switch.global : null);
}

function renderTotals() {
  const box = $("#totals");
  box.replaceChildren();
  for (const [cur, t] of Object.entries(state.totals)) {
    const item = (k, v, cls = "") => el("div", {}, el("span", { class: "k", text: k }), el("span", { class: `v ${cls}`, text: v }));
    box.append(el("div", { class: "total" },
      el("span", { class: "cur", text: cur || "—" }),
      item("Equity", money(t.equity)), item("Balance", money(t.balance)), item("Available", money(t.available)),
      item("Open P&L", money(t.unrealized_pnl), signClass(t.unrealized_pnl)),
      item("P&L today", money(t.daily_pnl), signClass(t.daily_pnl)),
      item("Accounts", String(t.accounts))));
  }
}

function renderAccounts() {
  const body = $("#accounts-table tbody");
  body.replaceChildren();
  for (const a of state.accounts.values()) {
    const info = a.account_info || {};
    const positions = (a.portfolio.positions || []).filter((p) => p.qty !== 0).length;
    const stale = (a.stale_data || []).length;
    const row = el("tr", { "data-account": a.account, class: a.account === state.selected ? "selected" : "",
      onclick: () => { state.selected = a.account; renderAll(); loadHistory().catch((e) => toast(e.message, true)); } },
      el("td", { class: "acc", text: a.account }),
      el("td", { text: a.broker || "" }),
      el("td", {}, pill(a.state, STATE_CLASS[a.state] || "wait"), a.reason ? el("span", { class: "muted reason", title: a.reason, text: a.reason }) : ""),
      el("td", {}, pill(KILL_TEXT[a.kill_switch] || a.kill_switch, KILL_CLASS[a.kill_switch] || "wait")),
      numCell(money(info.equity), "equity"), numCell(money(info.balance), "balance"), numCell(money(info.available)),
      pnlCell(openPnl(a)), pnlCell(a.daily_pnl),
      numCell(String((a.portfolio.orders || []).length), "orders"), numCell(String(positions), "positions"),
      el("td", { class: "data" }, stale ? pill(`${stale} stale`, "bad")
        : a.subscriptions ? pill(`${a.subscriptions} ok`, "good") : el("span", { class: "muted", text: "none" })),
      numCell(a.last_heard_s === null || a.last_heard_s === undefined ? "–" : `${a.last_heard_s.toFixed(1)}s`));
    body.append(row);
  }
}

// Open P&L at the engine's latest prices, as the positions table shows it.
function openPnl(a) {
  return (a.portfolio.positions || []).reduce((sum, p) => sum + Number(p.unrealized_pnl || 0), 0);
}

function renderKill(seg, mode) {
  for (const b of seg.querySelectorAll("button")) b.classList.toggle("on", b.dataset.mode === mode);
}

function renderDetail() {
  const a = state.accounts.get(state.selected);
  $("#detail").classList.toggle("hidden", !a);
  if (!a) return;
  $("#detail-title").textContent = `Account ${a.account} · ${a.broker || ""}${a.account_info && a.account_info.currency ? " · " + a.account_info.currency : ""}`;
  const st = $("#detail-state");
  st.textContent = a.state;
  st.className = `pill ${STATE_CLASS[a.state] || "wait"}`;
  $("#detail-reason").textContent = a.reason || "";
  const last = state.history.length ? state.history[state.history.length - 1].time : null;
  $("#detail-asof").textContent = last ? `broker balance as of ${hhmmss(last)} UTC` : "";
  renderKill($("#account-kill"), a.kill_switch);

  const pos = $("#positions-table tbody");
  pos.replaceChildren();
  const positions = a.portfolio.positions || [];
  if (!positions.length) emptyRow(pos, 6, "no positions");
  for (const p of positions) {
    pos.append(el("tr", { "data-epic": p.epic }, el("td", { text: p.epic }),
      numCell(qty(p.qty), signClass(p.qty)), numCell(price(p.avg_price)), numCell(price(p.market_price)),
      pnlCell(p.unrealized_pnl), pnlCell(p.realized_pnl)));
  }

  const ord = $("#orders-table tbody");
  ord.replaceChildren();
  const orders = a.portfolio.orders || [];
  if (!orders.length) emptyRow(ord, 8, "no working orders");
  for (const o of orders) {
    const cancel = el("button", { class: "btn small warn", text: "Cancel",
      onclick: () => confirmThen("Cancel order", `Cancel ${o.order_type} ${o.qty > 0 ? "BUY" : "SELL"} ${qty(Math.abs(o.qty))} ${o.epic} (${o.client_order_id}) on account ${a.account}?`,
        () => post(`orders/${encodeURIComponent(a.account)}/${encodeURIComponent(o.client_order_id)}/cancel`).then(() => toast(`cancel sent for ${o.client_order_id}`))) });
    ord.append(el("tr", { "data-order": o.client_order_id }, el("td", { class: "mono", text: o.client_order_id }),
      el("td", { class: o.qty > 0 ? "pos" : "neg", text: o.qty > 0 ? "BUY" : "SELL" }),
      numCell(qty(Math.abs(o.qty))), el("td", { text: o.epic }), el("td", { text: o.order_type }),
      numCell(price(o.price)), el("td", { text: o.status }), el("td", {}, cancel)));
  }

  const lim = $("#limits-table tbody");
  lim.replaceChildren();
  const limits = state.risk && state.risk.accounts ? state.risk.accounts[a.account] || {} : {};
  const set = Object.entries(limits).filter(([, v]) => v !== null && v !== undefined);
  if (!set.length) emptyRow(lim, 2, "no limits set");
  for (const [k, v] of set) lim.append(el("tr", {}, el("td", { text: k.replaceAll("_", " ") }), el("td", { text: typeof v === "number" ? qty(v) : String(v) })));

  const den = $("#denials-table tbody");
  den.replaceChildren();
  const refused = state.risk && state.risk.refused ? state.risk.refused[a.account] || {} : {};
  if (!Object.keys(refused).length) emptyRow(den, 2, "no orders refused by risk");
  for (const [code, n] of Object.entries(refused)) den.append(el("tr", {}, el("td", { text: code.replaceAll("_", " ") }), el("td", { class: "neg", text: String(n) })));
  renderFills();
}

function renderFills() {
  const body = $("#fills-table tbody");
  body.replaceChildren();
  if (!state.fills.length) emptyRow(body, 6, "no fills yet");
  for (const f of state.fills.slice(0, 50)) {
    body.append(el("tr", { "data-exec": f.exec_id }, numCell(f.time ? hhmmss(f.time) : "–"),
      el("td", { class: "mono", text: f.client_order_id || "" }), el("td", { text: f.epic || "" }),
      numCell(qty(f.qty), signClass(f.qty)), numCell(price(f.price)), numCell(money(f.commission))));
  }
}

function renderChart() {
  const box = $("#equity-chart");
  if (!window.LightweightCharts) return;
  if (!state.chart) {
    state.chart = LightweightCharts.createChart(box, {
      autoSize: true,
      layout: { background: { color: "#141a22" }, textColor: "#7d8896", fontSize: 11 },
      grid: { vertLines: { color: "#1a212b" }, horzLines: { color: "#1a212b" } },
      rightPriceScale: { borderColor: "#232c38" },
      timeScale: { borderColor: "#232c38", timeVisible: true, secondsVisible: true },
    });
    state.series = state.chart.addSeries(LightweightCharts.AreaSeries, {
      lineColor: "#4c9aff", topColor: "rgba(76,154,255,0.35)", bottomColor: "rgba(76,154,255,0.02)", lineWidth: 2,
    });
  }
  const dayStart = new Date(); dayStart.setUTCHours(0, 0, 0, 0);
  const since = state.range === "day" ? dayStart.getTime() : 0;
  const bySecond = new Map();  // the chart wants one point per second, ascending
  for (const p of state.history) {
    const value = p.equity !== null && p.equity !== undefined ? p.equity : p.balance;
    if (p.time >= since && value !== null && value !== undefined) bySecond.set(Math.floor(p.time / 1000), Number(value));
  }
  state.series.setData([...bySecond.entries()].sort((x, y) => x[0] - y[0]).map(([time, value]) => ({ time, value })));
  state.chart.timeScale().fitContent();
}

// -- live events ---------------------------------------------------------------------------
function describe(ev) {
  switch (ev.type) {
    case "order": {
      const side = (ev.qty || 0) > 0 ? "BUY" : "SELL";
      let text = `${side} ${qty(Math.abs(ev.qty || 0))} ${ev.epic} ${ev.order_type || ""} ${ev.status}`;
      if (ev.fills && ev.fills.length) text = `FILL ${side} ${ev.fills.map((f) => `${qty(Math.abs(f.qty))} @ ${price(f.price)}`).join(", ")} ${ev.epic} (${ev.status})`;
      if (ev.error || (ev.status === "REJECTED" && ev.reason)) text += ` — ${ev.error || ev.reason}`;
      const cls = ev.fills && ev.fills.length ? "fill" : ev.status === "REJECTED" ? "reject" : "";
      return [text, cls];
    }
    case "account_status": return [`${ev.state}${ev.reason ? " (" + ev.reason + ")" : ""}`, ev.state === "ready" ? "" : ev.state === "disconnected" ? "down" : "warn"];
    case "kill_switch": return [`kill switch ${ev.account ? "" : "(global) "}→ ${KILL_TEXT[ev.mode] || ev.mode}`, ev.mode === "active" ? "" : ev.mode === "halted" ? "reject" : "warn"];
    case "stale_data": return [`${ev.epic} ${ev.time_frame}s data ${ev.stale ? `STALE (silent ${ev.silent_s}s)` : "flowing again"}`, ev.stale ? "warn" : ""];
    case "worker_error": return [`broker error: ${ev.reason}`, "reject"];
    case "discrepancy": return [`${ev.kind} ${ev.key} differs (engine ${ev.engine}, broker ${ev.broker})`, "warn"];
    case "operator_action": return [`${ev.action.replace("_", "-")} by ${ev.by}: ${ev.cancelled.length} cancel(s), ${ev.closing.length} close(s), ${ev.refused.length} refused`, ev.refused.length ? "warn" : ""];
    case "account_info": return null;  // shown in the tables, too frequent for the feed
    case "portfolio": return null;
    default: return null;
  }
}

function addFeed(ev, fresh = true) {
  const d = describe(ev);
  if (!d) return;
  const [text, cls] = d;
  const list = $("#feed");
  const when = ev.time || ev.updated_at || Date.now();
  const item = el("li", { class: `${cls} ${fresh ? "fresh" : ""} ev-${ev.type}` },
    el("span", { class: "t", text: hhmmss(typeof when === "number" && when > 1e12 ? when : Date.now()) }),
    el("span", { class: "a", text: ev.account || "all" }), el("span", { class: "x", text }));
  list.prepend(item);
  while (list.children.length > MAX_FEED) list.lastChild.remove();
}

function applyEvent(ev) {
  addFeed(ev);
  const a = ev.account ? state.accounts.get(ev.account) : null;
  switch (ev.type) {
    case "account_info":
      if (a) { a.account_info = ev.info; renderAll(); }
      break;
    case "account_status":
      if (a) { a.state = ev.state; a.reason = ev.reason; if (ev.account_info) a.account_info = ev.account_info; renderAll(); }
      break;
    case "portfolio":
      if (a) { a.portfolio = ev.portfolio; renderAll(); }
      break;
    case "order":
      if (a) {
        const orders = (a.portfolio.orders || []).filter((o) => o.client_order_id !== ev.client_order_id);
        if (!["FILLED", "CANCELLED", "REJECTED", "EXPIRED"].includes(ev.status)) orders.push(ev);
        a.portfolio.orders = orders;
        renderAll();
      }
      if ((ev.fills && ev.fills.length) || ev.status === "REJECTED") refreshSoon();  // positions, P&L, denials
      break;
    case "kill_switch": case "operator_action": case "stale_data": case "discrepancy": case "feed_gap":
      refreshSoon();
      break;
    case "pulse":
      for (const view of ev.accounts || []) state.accounts.set(view.account, view);
      if (ev.totals) state.totals = ev.totals;
      if ((ev.accounts || []).length) { renderTotals(); renderAccounts(); renderDetail(); }
      break;
  }
}

function connectStream() {
  const source = new EventSource("/ui/api/events");
  const live = $("#live");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; refreshSoon(); };
  source.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
    // A restarted engine has forgotten every session: ask for a login instead of retrying forever.
    api("session").catch((e) => {
      if (e.status !== 401) return;
      source.close();
      live.textContent = "logged out";
      $("#app").classList.add("hidden");
      $("#login-error").textContent = "The engine no longer knows this session (restarted?): open its new dashboard link or paste the API token.";
      showLogin();
    });
  };
  source.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    applyEvent(ev);
  };
}

// -- actions -----------------------------------------------------------------------------
function confirmThen(title, text, action) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  dlg.returnValue = "";
  dlg.onclose = () => {
    if (dlg.returnValue !== "ok") return;
    Promise.resolve(action()).catch((e) => toast(e.message, true));
  };
  dlg.showModal();
}

function actionSummary(r) {
  const parts = [`${r.cancelled.length} cancel(s) sent`];
  if (r.action === "flatten") parts.push(`${r.closing.length} closing order(s)`, `kill switch ${KILL_TEXT[r.kill_switch]}`);
  if (r.refused.length) parts.push(`NOT done: ${r.refused.map((x) => `${x.epic || x.client_order_id}: ${x.reason}`).join("; ")}`);
  return parts.join(", ");
}

function wireActions() {
  const scopeText = (account) => (account ? `account ${account}` : "EVERY account");
  const setKill = (account, mode) => confirmThen("Kill switch",
    `Set the kill switch of ${scopeText(account)} to ${KILL_TEXT[mode].toUpperCase()}?` +
    (mode === "halted" ? " No order of any kind will be sent." : mode === "reduce_only" ? " Only orders that reduce a position will be sent." : " Orders flow normally."),
    () => post("kill-switch", account ? { mode, account } : { mode }).then(() => { toast(`kill switch of ${scopeText(account)}: ${KILL_TEXT[mode]}`); refreshSoon(); }));
  const cancelAll = (account) => confirmThen("Cancel all",
    `Cancel every working order of ${scopeText(account)}?`,
    () => post("cancel-all", account ? { account } : {}).then((r) => { toast(actionSummary(r), r.refused.length > 0); refreshSoon(); }));
  const flatten = (account) => confirmThen("Flatten",
    `Cancel every working order of ${scopeText(account)} and close every position AT MARKET? The kill switch is left at reduce only.`,
    () => post("flatten", account ? { account } : {}).then((r) => { toast(actionSummary(r), r.refused.length > 0); refreshSoon(); }));

  for (const b of document.querySelectorAll("#global-kill button")) b.addEventListener("click", () => setKill(null, b.dataset.mode));
  for (const b of document.querySelectorAll("#account-kill button")) b.addEventListener("click", () => setKill(state.selected, b.dataset.mode));
  $("#global-cancel-all").addEventListener("click", () => cancelAll(null));
  $("#global-flatten").addEventListener("click", () => flatten(null));
  $("#account-cancel-all").addEventListener("click", () => cancelAll(state.selected));
  $("#account-flatten").addEventListener("click", () => flatten(state.selected));
  $("#logout").addEventListener("click", () => post("logout").then(() => location.reload()));
  $("#range-day").addEventListener("click", () => { state.range = "day"; $("#range-day").classList.add("on"); $("#range-all").classList.remove("on"); renderChart(); });
  $("#range-all").addEventListener("click", () => { state.range = "all"; $("#range-all").classList.add("on"); $("#range-day").classList.remove("on"); renderChart(); });
}

// -- reports -----------------------------------------------------------------------------
// Backtest and optimisation reports of the reports directory; each opens in the frame below
// the list (served sandboxed by the engine) or in a new tab. Files are named by the listing.
const pct = (v) => (typeof v === "number") ? `${(100 * v).toFixed(2)}%` : (v === null || v === undefined ? "–" : String(v));
const fixed = (v) => (typeof v === "number") ? v.toFixed(3) : (v === null || v === undefined ? "–" : String(v));
const reportUrl = (r, name) => `/ui/reports/${encodeURIComponent(r.id)}/${name.split("/").map(encodeURIComponent).join("/")}`;

async function loadReports() {
  const body = await api("reports");
  $("#reports-root").textContent = body.root ? `in ${body.root}` : "no reports directory";
  const tbody = $("#reports-table tbody");
  tbody.replaceChildren();
  if (!body.reports.length) emptyRow(tbody, 11, "no reports yet: maotrade backtest and maotrade optimize write here by default");
  for (const r of body.reports) tbody.append(reportRow(r));
}

function reportRow(r) {
  const f = r.figures || {};
  const backtest = r.kind === "backtest";
  const cells = backtest
    ? [numCell(pct(f.total_return), signClass(Number(f.total_return || 0))), numCell(fixed(f.sharpe)),
       numCell(pct(f.max_drawdown)), numCell(pct(f.win_rate)), numCell(f.trades ?? "–")]
    : [numCell(fixed(f.in_sample)), numCell(fixed(f.out_of_sample)), numCell("–"), numCell("–"),
       numCell(f.trials ?? "–")];
  const files = el("td", { class: "files" });
  for (const name of r.files) {
    if (name === r.main) continue;
    files.append(el("a", { href: reportUrl(r, name), target: "_blank", rel: "noopener", text: name }), " ");
  }
  const strategy = el("td", { text: r.strategy || "?" });
  if (r.error) strategy.append(el("div", { class: "error", text: r.error }));
  if (!backtest && f.metric) strategy.append(el("div", { class: "muted", text: `best by ${f.metric}: ${JSON.stringify(f.best_params || {})}` }));
  const row = el("tr", { "data-report": r.id },
    el("td", {}, pill(backtest ? "backtest" : "optimisation", backtest ? "good" : "wait")),
    strategy, el("td", { text: (r.instruments || []).join(", ") || "–" }),
    el("td", { class: "num", text: (r.ran_at || "").replace("T", " ").replace("Z", "") }),
    ...cells, el("td", { class: "muted folder", text: r.name }), files);
  if (r.main) {
    row.classList.add("clickable");
    row.title = "open the report";
    row.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") openReport(r); });
  }
  return row;
}

function openReport(r) {
  const url = reportUrl(r, r.main);
  $("#report-title").textContent = `${r.kind === "backtest" ? "Backtest" : "Optimisation (best run)"}: ${r.strategy || ""} (${r.name})`;
  $("#report-newtab").href = url;
  $("#report-frame").src = url;
  for (const tr of document.querySelectorAll("#reports-table tbody tr")) tr.classList.toggle("sel", tr.dataset.report === r.id);
  $("#report-viewer").classList.remove("hidden");
  $("#report-viewer").scrollIntoView({ block: "start" });
}

function wireReports() {
  $("#reports-refresh").addEventListener("click", () => loadReports().catch((e) => toast(e.message, true)));
  $("#report-close").addEventListener("click", () => {
    $("#report-viewer").classList.add("hidden");
    $("#report-frame").removeAttribute("src");
  });
}

// -- start -------------------------------------------------------------------------------
async function start() {
  start.started = true;
  $("#app").classList.remove("hidden");
  wireActions();
  wireReports();
  loadReports().catch((e) => toast(`reports: ${e.message}`, true));
  await loadOverview();
  await loadHistory();
  connectStream();
}

const tick = () => { $("#clock").textContent = `${new Date().toISOString().slice(11, 19)} UTC`; };
setInterval(tick, 1000);
tick();
window.addEventListener("DOMContentLoaded", async () => {
  if (await login()) start().catch((e) => toast(e.message, true));
  else showLogin();
});

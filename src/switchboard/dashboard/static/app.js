// Switchboard operator dashboard. Vanilla JS, no dependencies.
// Every value that comes from the API is inserted as text (createTextNode / textContent), never as HTML.
"use strict";

(function () {
  const KEY_STORE = "switchboard.adminKey";
  const API = "/dashboard/api/";
  const PALETTE = ["#3b5bdb", "#12b886", "#f59f00", "#ae3ec9", "#1098ad", "#e8590c", "#5c940d", "#868e96"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    key: sessionStorage.getItem(KEY_STORE),
    since: "1h",
    reference: null,
    search: "",
    model: "",
    status: "all",
    colors: {},
    lastSeries: null,
    timer: null,
  };

  const $ = (id) => document.getElementById(id);

  // -- DOM helpers: text only ----------------------------------------------------------------
  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const c of children) append(node, c);
    return node;
  }
  function append(node, child) {
    if (child === null || child === undefined) return;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  function svgTitle(node, text) {
    const t = svg("title");
    t.textContent = text;
    node.appendChild(t);
    return node;
  }

  // -- formatting ------------------------------------------------------------------------------
  const nf = new Intl.NumberFormat();
  const fmtInt = (n) => (n === null || n === undefined ? "—" : nf.format(n));
  const fmtPct = (x) => (x === null || x === undefined ? "—" : (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + "%");
  const fmtMs = (ms) => (ms === null || ms === undefined ? "—" : ms >= 10000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms) + " ms");
  function fmtUsd(x) {
    if (x === null || x === undefined) return "—";
    const a = Math.abs(x);
    const digits = a === 0 ? 2 : a < 0.01 ? 5 : a < 1 ? 4 : 2;
    return (x < 0 ? "−$" : "$") + a.toFixed(digits);
  }
  function fmtTime(ts, withDate) {
    const d = new Date(ts * 1000);
    const opts = { hour: "2-digit", minute: "2-digit" };
    if (withDate) Object.assign(opts, { month: "short", day: "numeric", second: "2-digit" });
    return d.toLocaleString(undefined, opts);
  }
  function colorFor(model) {
    if (model === "(other)") return "#adb5bd";
    if (!(model in state.colors)) state.colors[model] = PALETTE[Object.keys(state.colors).length % PALETTE.length];
    return state.colors[model];
  }
  function statusBadge(status, partial) {
    if (partial) return el("span", "badge warn", String(status) + " cut");
    return el("span", "badge " + (status >= 400 ? "bad" : "ok"), String(status));
  }

  // -- API -------------------------------------------------------------------------------------
  class AuthError extends Error {}
  async function api(path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") qs.set(k, v);
    const url = API + path + (qs.toString() ? "?" + qs.toString() : "");
    const resp = await fetch(url, { headers: { Authorization: "Bearer " + state.key }, cache: "no-store" });
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (resp.status === 401) throw new AuthError((body && body.error && body.error.message) || "Unauthorized");
    if (!resp.ok) throw new Error((body && body.error && body.error.message) || "HTTP " + resp.status);
    return body;
  }

  // -- sign in / out ---------------------------------------------------------------------------
  function showLogin(message) {
    stopTimer();
    $("app").hidden = true;
    $("controls").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("key").focus();
  }
  function signOut(message) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORE);
    closeDrawer();
    showLogin(message);
  }
  function showApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("controls").hidden = false;
  }

  // -- loading ---------------------------------------------------------------------------------
  let loading = null;
  async function refresh() {
    if (!state.key) return showLogin();
    if (loading) return loading;
    loading = (async () => {
      try {
        if (state.reference === null) {
          const probe = await api("summary", { since: state.since });
          state.reference = probe.reference_choices[0] || "";
        }
        const range = { since: state.since, reference: state.reference };
        const [summary, series, health] = await Promise.all([
          api("summary", range), api("timeseries", range), api("health"),
        ]);
        showApp();
        setBanner(null);
        fillReference(summary.reference_choices);
        renderKpis(summary);
        for (const g of summary.groups) colorFor(g.key);
        state.lastSeries = series;
        renderCharts(series);
        renderSplit(summary);
        renderHealth(health);
        fillModelFilter(summary.groups.map((g) => g.key));
        await refreshRequests();
        $("updated").textContent = "Updated " + fmtTime(Date.now() / 1000, false);
        document.body.dataset.loaded = "true";
      } catch (e) {
        if (e instanceof AuthError) return signOut("That key was not accepted.");
        showApp();
        setBanner("Could not load the dashboard: " + e.message);
      }
    })();
    try { await loading; } finally { loading = null; }
  }
  async function refreshRequests() {
    const data = await api("requests", {
      since: state.since, q: state.search, model: state.model, status: state.status, limit: 100,
    });
    renderRequests(data);
  }
  function setBanner(text) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
  }
  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }
  function startTimer() {
    stopTimer();
    state.timer = setInterval(() => { if (!document.hidden && $("drawer").hidden) refresh(); }, 15000);
  }

  // -- KPI cards -------------------------------------------------------------------------------
  function setKpi(id, value, hint, tone) {
    const card = $(id);
    card.querySelector(".value").textContent = value;
    card.querySelector(".hint").textContent = hint || "";
    card.classList.remove("bad", "good");
    if (tone) card.classList.add(tone);
  }
  function renderKpis(summary) {
    const t = summary.total;
    setKpi("kpi-requests", fmtInt(t.requests), fmtInt(t.input_tokens + t.output_tokens) + " tokens");
    setKpi("kpi-errors", t.requests ? fmtPct(t.error_rate) : "—", fmtInt(t.errors) + " failed · " + fmtPct(t.fallback_rate) + " rescued by fallback",
      t.error_rate > 0.05 ? "bad" : null);
    setKpi("kpi-p95", fmtMs(t.latency_p95_ms), "p50 " + fmtMs(t.latency_p50_ms));
    setKpi("kpi-cost", fmtUsd(t.cost_usd), t.requests ? fmtUsd(t.cost_usd / t.requests) + " per request" : "");
    if (t.savings_usd === null || t.savings_usd === undefined) {
      setKpi("kpi-savings", "—", summary.reference ? "no successful requests" : "choose a reference model");
    } else {
      const share = t.reference_cost_usd ? t.savings_usd / t.reference_cost_usd : 0;
      setKpi("kpi-savings", fmtUsd(t.savings_usd), fmtPct(share) + " vs all on " + summary.reference,
        t.savings_usd > 0 ? "good" : null);
    }
  }

  // -- charts ----------------------------------------------------------------------------------
  function emptyState(container, text) {
    container.replaceChildren(el("div", "empty", text || "No traffic in this window"));
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  // A frame with y grid lines and x labels; returns the svg and scales.
  function frame(container, buckets, yMax, yFmt) {
    const width = Math.max(container.clientWidth, 300);
    const height = container.clientHeight || 220;
    const pad = { l: 66, r: 12, t: 10, b: 24 };
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", preserveAspectRatio: "none" });
    const innerW = width - pad.l - pad.r;
    const innerH = height - pad.t - pad.b;
    const n = buckets.length;
    const step = innerW / n;
    const y = (v) => pad.t + innerH - (v / yMax) * innerH;
    const x = (i) => pad.l + i * step;
    for (let k = 0; k <= 4; k++) {
      const v = (yMax * k) / 4;
      root.appendChild(svg("line", { class: "grid-line", x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v) }));
      const label = svg("text", { class: "axis-label", x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = yFmt(v);
      root.appendChild(label);
    }
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(innerW / 70))));
    const long = buckets.length && buckets[n - 1].t - buckets[0].t > 86400;
    for (let i = 0; i < n; i += every) {
      const label = svg("text", { class: "axis-label", x: x(i) + step / 2, y: height - 6, "text-anchor": "middle" });
      const d = new Date(buckets[i].t * 1000);
      label.textContent = long ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) : fmtTime(buckets[i].t, false);
      root.appendChild(label);
    }
    return { root, x, y, step, innerH, pad, height };
  }
  function legend(id, items) {
    const box = $(id);
    box.replaceChildren(...items.map(([name, color, dashed]) => {
      const sw = el("span", "swatch");
      sw.style.background = dashed ? "transparent" : color;
      if (dashed) sw.style.border = "2px dashed " + color;
      return el("span", null, sw, name);
    }));
  }
  function linePath(buckets, key, f) {
    let d = "";
    let pen = false;
    buckets.forEach((b, i) => {
      const v = b[key];
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + f.x(i + 0.5).toFixed(1) + "," + f.y(v).toFixed(1);
      pen = true;
    });
    return d;
  }
  function hoverTargets(f, buckets, describe) {
    buckets.forEach((b, i) => {
      const r = svg("rect", { class: "hover-target", x: f.x(i), y: f.pad.t, width: f.step, height: f.innerH });
      f.root.appendChild(svgTitle(r, describe(b)));
    });
  }
  function dots(f, buckets, key, color) {
    buckets.forEach((b, i) => {
      if (b[key] === null || b[key] === undefined || !b.requests) return;
      f.root.appendChild(svg("circle", { cx: f.x(i + 0.5), cy: f.y(b[key]), r: 2.5, fill: color }));
    });
  }

  function renderTraffic(series) {
    const box = $("chart-traffic");
    const b = series.buckets;
    const yMax = niceMax(Math.max(...b.map((x) => x.requests)));
    const f = frame(box, b, yMax, (v) => fmtInt(Math.round(v)));
    const barW = Math.max(1, f.step * 0.72);
    b.forEach((bucket, i) => {
      let acc = 0;
      for (const m of series.models) {
        const n = bucket.by_model[m] || 0;
        if (!n) continue;
        const top = f.y(acc + n);
        const rect = svg("rect", { class: "bar", x: f.x(i) + (f.step - barW) / 2, y: top, width: barW,
          height: Math.max(0.5, f.y(acc) - top), fill: colorFor(m), rx: Math.min(2, barW / 4) });
        acc += n;
        f.root.appendChild(rect);
      }
    });
    const err = linePath(b, "errors", f);
    if (err && b.some((x) => x.errors > 0)) f.root.appendChild(svg("path", { class: "err-line", d: err }));
    hoverTargets(f, b, (x) => fmtTime(x.t, true) + "\n" + fmtInt(x.requests) + " requests, " + fmtInt(x.errors) + " errors\n" +
      Object.entries(x.by_model).map(([m, n]) => m + ": " + n).join("\n"));
    box.replaceChildren(f.root);
    legend("legend-traffic", [...series.models.map((m) => [m, colorFor(m)]), ["errors", "#c92a2a", true]]);
  }
  function renderLines(boxId, legendId, series, lines, fmt) {
    const box = $(boxId);
    const b = series.buckets;
    const values = b.flatMap((x) => lines.map(([k]) => x[k])).filter((v) => v !== null && v !== undefined);
    const lo = Math.min(0, ...values);
    const yMax = niceMax(Math.max(...values, 0) - lo);
    const f = frame(box, b, yMax, fmt);
    for (const [key, color] of lines) {
      const d = linePath(b, key, f);
      if (d) f.root.appendChild(svg("path", { class: "line", d, stroke: color }));
      dots(f, b, key, color);
    }
    hoverTargets(f, b, (x) => fmtTime(x.t, true) + "\n" + lines.map(([k, , name]) => name + ": " + fmt(x[k])).join("\n"));
    box.replaceChildren(f.root);
    legend(legendId, lines.map(([, color, name]) => [name, color]));
  }
  function renderCharts(series) {
    const any = series.buckets.some((x) => x.requests > 0);
    if (!any) {
      for (const id of ["chart-traffic", "chart-latency", "chart-cost"]) emptyState($(id));
      for (const id of ["legend-traffic", "legend-latency", "legend-cost"]) $(id).replaceChildren();
      return;
    }
    renderTraffic(series);
    if (series.buckets.some((x) => x.latency_p95_ms !== null)) {
      renderLines("chart-latency", "legend-latency", series,
        [["latency_p50_ms", "#12b886", "p50"], ["latency_p95_ms", "#3b5bdb", "p95"]], fmtMs);
    } else {
      emptyState($("chart-latency"), "No successful requests in this window");
      $("legend-latency").replaceChildren();
    }
    const lines = [["cost_usd", "#e8590c", "cost"]];
    if (series.reference) lines.push(["savings_usd", "#2b8a3e", "saved vs " + series.reference]);
    renderLines("chart-cost", "legend-cost", series, lines, fmtUsd);
  }

  function renderSplit(summary) {
    const box = $("split");
    const total = summary.total.requests;
    if (!total) return emptyState(box);
    const rows = summary.groups.map((g) => {
      const share = g.requests / total;
      const bar = el("div", "split-bar");
      bar.style.width = (share * 100).toFixed(2) + "%";
      bar.style.background = colorFor(g.key);
      const sw = el("span", "swatch");
      sw.style.background = colorFor(g.key);
      const name = el("div", "split-name", sw, g.key);
      name.title = g.key;
      return el("div", "split-row", name, el("div", "split-track", bar),
        el("div", "split-figs", fmtInt(g.requests) + " · " + fmtPct(share) + " · " + fmtUsd(g.cost_usd)));
    });
    box.replaceChildren(...rows);
  }

  // -- tables ----------------------------------------------------------------------------------
  function td(content, cls) {
    const cell = el("td", cls || null);
    append(cell, content);
    return cell;
  }
  function emptyRow(tbody, cols, text) {
    const cell = td(text, "empty-cell");
    cell.colSpan = cols;
    tbody.replaceChildren(el("tr", null, cell));
  }
  function renderHealth(health) {
    const tbody = $("health").tBodies[0];
    if (!health.deployments.length) return emptyRow(tbody, 8, "No deployments are configured");
    tbody.replaceChildren(...health.deployments.map((d) => {
      const tone = d.state === "closed" ? "ok" : d.state === "open" ? "bad" : "warn";
      const badge = el("span", "badge " + tone, d.state.replace("_", "-"));
      if (d.available_in_s) badge.title = "available again in " + d.available_in_s.toFixed(0) + " s";
      const rate = d.recent_error_rate;
      return el("tr", null, td(el("span", "mono", d.deployment)), td(d.models.join(", ")), td(d.provider), td(badge),
        td(fmtInt(d.recent_attempts), "num"), td(fmtInt(d.recent_errors), "num"),
        td(rate === null ? "—" : fmtPct(rate), "num" + (rate > 0.2 ? " err" : "")), td(fmtInt(d.opened_count), "num"));
    }));
  }
  function modelLabel(r) {
    if (r.router && r.public_model) return r.router + " → " + r.public_model;
    return r.public_model || r.router || "—";
  }
  function renderRequests(data) {
    const tbody = $("requests").tBodies[0];
    if (!data.requests.length) {
      const filtered = state.search || state.model || state.status !== "all";
      return emptyRow(tbody, 9, filtered ? "No requests match these filters" : "No traffic in this window");
    }
    tbody.replaceChildren(...data.requests.map((r) => {
      const row = el("tr", null, td(fmtTime(r.started_at, true)), td(statusBadge(r.status, r.partial)), td(modelLabel(r)),
        td(el("span", "mono", r.deployment || "—")), td(fmtMs(r.latency_ms), "num"),
        td(fmtInt(r.input_tokens) + " / " + fmtInt(r.output_tokens), "num"), td(fmtUsd(r.cost_usd), "num"),
        td(fmtInt(r.attempts), "num"), td(r.error_message || "", "err"));
      row.dataset.requestId = r.request_id;
      row.tabIndex = 0;
      row.addEventListener("click", () => openDrawer(r.request_id));
      row.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openDrawer(r.request_id); });
      return row;
    }));
  }
  function fillReference(choices) {
    const sel = $("reference");
    if (sel.options.length === choices.length + 1) { sel.value = state.reference || ""; return; }
    const none = el("option", null, "none");
    none.value = "";
    sel.replaceChildren(none, ...choices.map((c) => { const o = el("option", null, c); o.value = c; return o; }));
    sel.value = state.reference || "";
  }
  function fillModelFilter(models) {
    const sel = $("model-filter");
    const known = new Set([...sel.options].map((o) => o.value));
    for (const m of models) {
      if (known.has(m) || m === "(none)") continue;
      const o = el("option", null, m);
      o.value = m;
      sel.appendChild(o);
    }
  }

  // -- drill-down ------------------------------------------------------------------------------
  function facts(pairs) {
    const dl = el("dl", "facts");
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === "") continue;
      dl.appendChild(el("dt", null, k));
      const dd = el("dd");
      append(dd, v);
      dl.appendChild(dd);
    }
    return dl;
  }
  function table(headers, rows, numeric) {
    const head = el("tr", null, ...headers.map((h, i) => el("th", numeric && numeric.includes(i) ? "num" : null, h)));
    const body = rows.map((r) => el("tr", null, ...r.map((c, i) => td(c, numeric && numeric.includes(i) ? "num" : null))));
    return el("div", "table-wrap", el("table", "table", el("thead", null, head), el("tbody", null, ...body)));
  }
  function detailText(detail) {
    if (!detail) return "";
    return Object.entries(detail).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : String(v))).join("  ");
  }
  function renderRecord(rec) {
    const body = $("drawer-body");
    const parts = [];
    $("drawer-title").textContent = "Request " + rec.request_id;
    parts.push(facts([
      ["Status", statusBadge(rec.status, rec.partial)],
      ["Time", fmtTime(rec.started_at, true)],
      ["Endpoint", rec.endpoint + " (" + rec.dialect + ")"],
      ["Router", rec.router],
      ["Model", rec.public_model],
      ["Deployment", rec.deployment],
      ["Upstream model", rec.upstream_model],
      ["Caller", rec.caller],
      ["Stream", rec.stream ? "yes" : "no"],
      ["Latency", fmtMs(rec.latency_ms) + (rec.ttft_ms !== null ? " · first token " + fmtMs(rec.ttft_ms) : "")],
      ["Tokens", fmtInt(rec.input_tokens) + " in · " + fmtInt(rec.output_tokens) + " out" +
        (rec.cached_tokens ? " · " + fmtInt(rec.cached_tokens) + " cached" : "") +
        (rec.reasoning_tokens ? " · " + fmtInt(rec.reasoning_tokens) + " reasoning" : "")],
      ["Cost", fmtUsd(rec.cost_usd)],
      ["Error", rec.error_message ? (rec.error_type ? rec.error_type + ": " : "") + rec.error_message : null],
      ["Unsatisfactory", rec.unsatisfactory],
    ]));
    parts.push(el("h3", null, "Attempts"));
    if (rec.attempts.length) {
      parts.push(table(["#", "Deployment", "Model", "Outcome", "Reason", "HTTP", "Latency", "Cost"],
        rec.attempts.map((a, i) => [String(i + 1) + (a.retry ? " (retry " + a.retry + ")" : "") + (a.hedge ? " hedge" : ""),
          el("span", "mono", a.deployment), a.model || "—",
          el("span", "badge " + (a.outcome === "ok" ? "ok" : a.outcome === "skipped" ? "neutral" : "bad"), a.outcome),
          a.error ? (a.reason ? a.reason + ": " : "") + a.error : a.reason || "",
          a.http_status === null ? "—" : String(a.http_status), fmtMs(a.latency_ms), fmtUsd(a.cost_usd)]), [6, 7]));
    } else {
      parts.push(el("p", "muted", "No upstream was called (the request was refused before routing)."));
    }
    const route = rec.route;
    if (route) {
      parts.push(el("h3", null, "Routing decision"));
      parts.push(facts([["Router", route.router], ["Chose", el("span", "chosen", route.model)],
        ["Ranking", (route.ranking || []).join(" › ")]]));
      if (route.steps && route.steps.length) {
        parts.push(el("ol", "steps", ...route.steps.map((s) =>
          el("li", null, el("strong", null, s.stage), " — " + s.outcome, s.detail ? el("div", "detail", detailText(s.detail)) : null))));
      }
      const scores = route.scores || {};
      const models = Object.keys(scores);
      if (models.length) {
        const keys = [...new Set(models.flatMap((m) => Object.keys(scores[m])))];
        parts.push(table(["Model", ...keys], models.map((m) => [m === route.model ? el("span", "chosen", m) : m,
          ...keys.map((k) => (scores[m][k] === undefined ? "—" : Number(scores[m][k]).toFixed(4)))]),
          keys.map((_, i) => i + 1)));
      }
    }
    const prompt = rec.prompt || (route && route.input && route.input.prompt);
    if (prompt) {
      parts.push(el("h3", null, "Prompt"));
      parts.push(el("pre", "pre prompt", prompt));
    }
    if (rec.completion) {
      parts.push(el("h3", null, "Completion"));
      parts.push(el("pre", "pre completion", rec.completion));
    }
    const meta = Object.entries(rec.metadata || {});
    if (meta.length) {
      parts.push(el("h3", null, "Metadata"));
      parts.push(facts(meta));
    }
    const raw = el("details", null, el("summary", null, "Raw record (JSON)"), el("pre", "pre", JSON.stringify(rec, null, 2)));
    parts.push(raw);
    body.replaceChildren(...parts);
  }
  async function openDrawer(id) {
    $("drawer").hidden = false;
    $("scrim").hidden = false;
    $("drawer-title").textContent = "Request " + id;
    $("drawer-body").replaceChildren(el("p", "muted", "Loading…"));
    try {
      const data = await api("requests/" + encodeURIComponent(id));
      renderRecord(data.request);
      $("drawer").dataset.loaded = id;
    } catch (e) {
      if (e instanceof AuthError) return signOut("That key was not accepted.");
      $("drawer-body").replaceChildren(el("p", "error", e.message));
    }
  }
  function closeDrawer() {
    $("drawer").hidden = true;
    $("scrim").hidden = true;
    delete $("drawer").dataset.loaded;
  }

  // -- wiring ----------------------------------------------------------------------------------
  function selectWindow(since) {
    state.since = since;
    for (const b of $("window").querySelectorAll("button")) b.classList.toggle("active", b.dataset.since === since);
  }
  function debounce(fn, ms) {
    let t = null;
    return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
  }
  function start() {
    selectWindow(state.since);
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("key").value.trim();
      if (!key) return;
      state.key = key;
      sessionStorage.setItem(KEY_STORE, key);
      $("key").value = "";
      refresh().then(startTimer);
    });
    $("window").addEventListener("click", (ev) => {
      const since = ev.target && ev.target.dataset ? ev.target.dataset.since : null;
      if (since) { selectWindow(since); refresh(); }
    });
    $("reference").addEventListener("change", (ev) => { state.reference = ev.target.value || ""; refresh(); });
    $("refresh").addEventListener("click", () => refresh());
    $("signout").addEventListener("click", () => signOut(null));
    $("drawer-close").addEventListener("click", closeDrawer);
    $("scrim").addEventListener("click", closeDrawer);
    document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeDrawer(); });
    const requests = () => refreshRequests().catch((e) => setBanner("Could not load requests: " + e.message));
    $("search").addEventListener("input", debounce((ev) => { state.search = ev.target.value.trim(); requests(); }, 250));
    $("model-filter").addEventListener("change", (ev) => { state.model = ev.target.value; requests(); });
    $("status-filter").addEventListener("change", (ev) => { state.status = ev.target.value; requests(); });
    window.addEventListener("resize", debounce(() => { if (state.lastSeries) renderCharts(state.lastSeries); }, 150));
    if (state.key) refresh().then(startTimer); else showLogin();
  }
  start();
})();

// The insurance-fund dashboard: plain JavaScript drawing SVG, no library, nothing loaded from elsewhere.
// History comes from dashboard/history (the deltas, ADL triggers and ADL state events of the window), then
// live changes from the dashboard/events stream; both carry per-fund sequence numbers, so whatever the two
// have in common is drawn once.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not something fetched
  const REASON_COLORS = { insufficient_fund: "#d62728", no_liquidity: "#ff7f0e", fund_drawdown: "#9467bd" };
  const SPARE_COLORS = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const KIND_COLORS = { top_up: "#2ca02c", withdrawal: "#1f77b4" };
  const OTHER_KIND_COLOR = "#6b7280";
  const MAX_POINTS = 5000; // per fund in the browser; older points are thinned beyond it
  const HEIGHT = 220;
  const MARGIN = { left: 82, right: 16, top: 12, bottom: 24 };
  const COLUMNS = [
    ["balance", "number balance"],
    ["total_surplus", "number"],
    ["total_paid", "number"],
    ["total_shortfall", "number"],
    ["total_top_ups", "number"],
    ["total_withdrawals", "number"],
    ["fills", "number"],
    ["adl_triggers", "number"],
  ];
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    .map((seconds) => seconds * 1000);

  const params = new URLSearchParams(location.search);
  const only = new Set(params.getAll("fund"));
  const wanted = (fund) => only.size === 0 || only.has(fund);

  const funds = new Map();
  const reasonColors = new Map(Object.entries(REASON_COLORS));
  const dirty = new Set();
  let covered = null; // the last history's last sequences: {delta: {fund: n}, trigger: {...}, state: {...}}
  let waitingUpdates = []; // live updates that arrived before the first history
  let clockOffset = 0; // browser clock minus worker clock, in ms
  let snapshotSeen = false;
  let frame = 0;
  let reconnecting = false;

  const byId = (id) => document.getElementById(id);

  function fund(name) {
    let entry = funds.get(name);
    if (entry === undefined) {
      entry = { name, doc: null, points: [], markers: [], liveMarkers: [], states: [], liveStates: [], deltas: 0 };
      funds.set(name, entry);
    }
    return entry;
  }

  // --- data -------------------------------------------------------------------------------------------

  function insertPoint(entry, raw) {
    const [timestamp, balance, sequence] = raw;
    if (typeof timestamp !== "number" || typeof sequence !== "number") return;
    const point = [timestamp, balance, sequence, Number(balance)];
    const points = entry.points;
    if (points.length === 0 || sequence > points[points.length - 1][2]) {
      points.push(point);
    } else {
      let low = 0;
      let high = points.length;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (points[middle][2] < sequence) low = middle + 1;
        else high = middle;
      }
      if (low < points.length && points[low][2] === sequence) return;
      points.splice(low, 0, point);
    }
    if (points.length > MAX_POINTS) {
      const half = points.length >> 1;
      entry.points = points.slice(0, half).filter((_, index) => index % 2 === 0).concat(points.slice(half));
    }
  }

  function coveredByHistory(kind, fundName, sequence) {
    if (covered === null) return false;
    const last = covered[kind] && covered[kind][fundName];
    return last !== undefined && sequence <= last;
  }

  function markerCovered(marker) {
    return coveredByHistory(marker.kind === "adl" ? "trigger" : "delta", marker.fund, marker.sequence);
  }

  function applyHistory(document_) {
    covered = document_.last_sequence || { delta: {}, trigger: {}, state: {} };
    for (const entry of funds.values()) {
      entry.markers = [];
      entry.states = [];
      entry.liveMarkers = entry.liveMarkers.filter((marker) => !markerCovered(marker));
      entry.liveStates = entry.liveStates.filter(
        (change) => !coveredByHistory("state", change.fund, change.sequence));
      dirty.add(entry.name);
    }
    for (const [name, found] of Object.entries(document_.funds || {})) {
      if (!wanted(name)) continue;
      const entry = fund(name);
      entry.deltas = found.deltas || 0;
      for (const point of found.points || []) insertPoint(entry, point);
      dirty.add(name);
    }
    for (const marker of document_.markers || []) {
      if (wanted(marker.fund)) fund(marker.fund).markers.push(marker);
    }
    for (const change of document_.states || []) {
      if (wanted(change.fund)) fund(change.fund).states.push(change);
    }
    describeWindow(document_);
    for (const update of waitingUpdates) applyUpdate(update);
    waitingUpdates = [];
    schedule();
  }

  function applySnapshot(snapshot) {
    clockOffset = Date.now() - snapshot.now;
    for (const [name, doc] of Object.entries(snapshot.funds || {})) {
      if (!wanted(name)) continue;
      fund(name).doc = doc;
      dirty.add(name);
    }
    snapshotSeen = true;
    schedule();
  }

  function applyUpdate(update) {
    if (covered === null) {
      waitingUpdates.push(update);
      return;
    }
    clockOffset = Date.now() - update.now;
    for (const [name, doc] of Object.entries(update.funds || {})) {
      if (!wanted(name)) continue;
      const entry = fund(name);
      entry.changed = entry.doc === null || entry.doc.balance !== doc.balance;
      entry.doc = doc;
      dirty.add(name);
    }
    for (const [name, points] of Object.entries(update.points || {})) {
      if (!wanted(name)) continue;
      const entry = fund(name);
      for (const point of points) insertPoint(entry, point);
      dirty.add(name);
    }
    for (const marker of update.markers || []) {
      if (!wanted(marker.fund) || markerCovered(marker)) continue;
      fund(marker.fund).liveMarkers.push(marker);
      dirty.add(marker.fund);
    }
    for (const change of update.states || []) {
      if (!wanted(change.fund) || coveredByHistory("state", change.fund, change.sequence)) continue;
      const entry = fund(change.fund);
      if (!entry.liveStates.some((known) => known.sequence === change.sequence)) entry.liveStates.push(change);
      dirty.add(change.fund);
    }
    schedule();
  }

  // --- formatting --------------------------------------------------------------------------------------

  function utc(ms, withDate = true) {
    if (typeof ms !== "number") return "–";
    const text = new Date(ms).toISOString();
    return withDate ? text.slice(0, 19).replace("T", " ") : text.slice(11, 19);
  }

  function ago(ms) {
    if (typeof ms !== "number") return "–";
    const seconds = Math.max(0, Math.round((Date.now() - clockOffset - ms) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    return `${Math.floor(seconds / 3600)} h ago`;
  }

  function decimals(step) {
    return Math.min(8, Math.max(0, -Math.floor(Math.log10(step))));
  }

  function number(value, places) {
    return value.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
  }

  function niceStep(span, count) {
    const raw = span / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const error = raw / power;
    return (error >= 7.5 ? 10 : error >= 3.5 ? 5 : error >= 1.5 ? 2 : 1) * power;
  }

  function colorOf(reason) {
    if (!reasonColors.has(reason)) {
      reasonColors.set(reason, SPARE_COLORS[(reasonColors.size - 3) % SPARE_COLORS.length]);
    }
    return reasonColors.get(reason);
  }

  function describeWindow(document_) {
    const since = `history: deltas committed since ${utc(document_.since)} UTC`;
    byId("window").textContent = only.size ? `${since} · funds ${[...only].join(", ")}` : since;
    const notes = [];
    const budgets = document_.budgets || {};
    for (const kind of document_.truncated || []) {
      notes.push(`the window holds more ${kind} than one page load reads: the newest ${budgets[kind]} are drawn`);
    }
    for (const kind of document_.missing || []) {
      if (kind !== "states") notes.push(`no ${kind} topic yet`);
    }
    notice(notes.join("; "));
  }

  function notice(text) {
    const element = byId("notice");
    element.textContent = text;
    element.hidden = !text;
  }

  // --- drawing -----------------------------------------------------------------------------------------

  function schedule() {
    if (frame === 0) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    const names = [...dirty].sort();
    dirty.clear();
    for (const name of names) {
      const entry = funds.get(name);
      if (entry === undefined) continue;
      renderRow(entry);
      renderChart(entry);
    }
    renderLegend();
    if (covered !== null && snapshotSeen) document.body.dataset.state = "ready";
  }

  function element(tag, attributes = {}, parent = null) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (parent !== null) parent.appendChild(node);
    return node;
  }

  function title(node, text) {
    element("title", {}, node).textContent = text;
  }

  function place(container, node, name) {
    // keep rows and charts in fund order
    const after = [...container.children].find((child) => child.dataset.fund > name);
    container.insertBefore(node, after || null);
  }

  function stateOf(entry) {
    if (entry.doc && typeof entry.doc.adl_state === "string") return entry.doc.adl_state;
    const changes = allStates(entry);
    return changes.length ? changes[changes.length - 1].state : "–";
  }

  function renderRow(entry) {
    if (entry.row === undefined) {
      const row = document.createElement("tr");
      row.dataset.fund = entry.name;
      const cells = { fund: document.createElement("td") };
      cells.fund.className = "fund";
      cells.fund.textContent = entry.name;
      row.appendChild(cells.fund);
      for (const [field, className] of COLUMNS) {
        const cell = document.createElement("td");
        cell.className = className;
        cell.dataset.field = field;
        row.appendChild(cell);
        cells[field] = cell;
      }
      for (const [field, className] of [["state", "state"], ["last_timestamp", "time"], ["committed", "time"]]) {
        const cell = document.createElement("td");
        cell.className = className;
        cell.dataset.field = field;
        row.appendChild(cell);
        cells[field] = cell;
      }
      entry.row = row;
      entry.cells = cells;
      place(document.querySelector("#funds tbody"), row, entry.name);
    }
    const doc = entry.doc || {};
    const last = entry.points[entry.points.length - 1];
    const fallback = { balance: last ? last[1] : "–" };
    for (const [field] of COLUMNS) {
      const value = doc[field] !== undefined ? doc[field] : fallback[field];
      entry.cells[field].textContent = value === undefined || value === null ? "–" : String(value);
    }
    const state = stateOf(entry);
    entry.cells.state.textContent = state;
    entry.cells.state.dataset.state = state;
    entry.cells.last_timestamp.textContent = utc(doc.last_timestamp);
    entry.cells.committed.textContent = ago(doc.committed_ms);
    if (entry.changed) {
      entry.changed = false;
      entry.row.classList.remove("changed");
      void entry.row.offsetWidth; // restart the highlight
      entry.row.classList.add("changed");
    }
  }

  function allStates(entry) {
    const seen = new Set();
    return entry.states.concat(entry.liveStates)
      .filter((change) => !seen.has(change.sequence) && seen.add(change.sequence))
      .sort((a, b) => a.timestamp - b.timestamp || a.sequence - b.sequence);
  }

  function drawdownPeriods(entry, start, end) {
    const changes = allStates(entry);
    let current = changes.length ? changes[0].previous_state || "normal" : stateOf(entry);
    let from = start;
    const periods = [];
    for (const change of changes) {
      if (current !== "normal" && current !== "–") periods.push([from, change.timestamp, current]);
      current = change.state;
      from = change.timestamp;
    }
    if (current !== "normal" && current !== "–") periods.push([from, end, current]);
    return periods
      .map(([left, right, state]) => [Math.max(left, start), Math.min(right, end), state])
      .filter(([left, right]) => right >= left);
  }

  function chartCard(entry) {
    if (entry.chart === undefined) {
      const card = document.createElement("section");
      card.className = "chart";
      card.dataset.fund = entry.name;
      const heading = document.createElement("h2");
      const name = document.createElement("span");
      name.textContent = entry.name;
      const balance = document.createElement("span");
      balance.className = "balance";
      const note = document.createElement("span");
      note.className = "note";
      heading.append(name, balance, note);
      const svg = element("svg", { role: "img", "aria-label": `${entry.name} balance over event time` });
      card.append(heading, svg);
      place(byId("charts"), card, entry.name);
      entry.chart = { card, svg, balance, note };
    }
    return entry.chart;
  }

  function renderChart(entry) {
    const chart = chartCard(entry);
    const svg = chart.svg;
    const width = Math.max(320, Math.round(svg.getBoundingClientRect().width) || 520);
    svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    svg.replaceChildren();
    const points = entry.points;
    const markers = entry.markers.concat(entry.liveMarkers);
    const last = points[points.length - 1];
    chart.balance.textContent = entry.doc ? entry.doc.balance : last ? last[1] : "";
    chart.note.textContent = `${points.length} points` + (entry.deltas > points.length ? ` of ${entry.deltas} deltas` : "");
    svg.dataset.points = String(points.length);
    svg.dataset.markers = String(markers.length);
    if (points.length === 0 && markers.length === 0) {
      svg.dataset.drawdowns = "0";
      const empty = element("text", { x: width / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, svg);
      empty.textContent = "no deltas in this window yet";
      return;
    }
    let start = Infinity;
    let end = -Infinity;
    let low = Infinity;
    let high = -Infinity;
    for (const point of points) {
      start = Math.min(start, point[0]);
      end = Math.max(end, point[0]);
      low = Math.min(low, point[3]);
      high = Math.max(high, point[3]);
    }
    for (const marker of markers) {
      start = Math.min(start, marker.timestamp);
      end = Math.max(end, marker.timestamp);
      const value = Number(marker.balance);
      low = Math.min(low, value);
      high = Math.max(high, value);
    }
    if (end - start < 2000) {
      start -= 1000;
      end += 1000;
    }
    if (high - low < 1e-12) {
      const pad = Math.max(Math.abs(high) * 0.05, 1e-8);
      low -= pad;
      high += pad;
    } else {
      const pad = (high - low) * 0.08;
      low -= pad;
      high += pad;
    }
    const left = MARGIN.left;
    const right = width - MARGIN.right;
    const top = MARGIN.top;
    const bottom = HEIGHT - MARGIN.bottom;
    const x = (ms) => left + ((ms - start) / (end - start)) * (right - left);
    const y = (value) => bottom - ((value - low) / (high - low)) * (bottom - top);

    const periods = drawdownPeriods(entry, start, end);
    svg.dataset.drawdowns = String(periods.length);
    for (const [from, to, state] of periods) {
      const shade = element("rect", {
        class: "drawdown", "data-state": state, x: x(from), y: top, width: Math.max(1, x(to) - x(from)),
        height: bottom - top,
      }, svg);
      title(shade, `${state} from ${utc(from)} to ${utc(to)} UTC (event time)`);
    }

    const grid = element("g", { class: "grid" }, svg);
    const axis = element("g", { class: "axis" }, svg);
    const step = niceStep(high - low, 4);
    const places = decimals(step);
    for (let tick = Math.ceil(low / step); tick * step <= high; tick += 1) {
      const value = tick === 0 ? 0 : tick * step; // never a "-0" label
      element("line", { x1: left, x2: right, y1: y(value), y2: y(value) }, grid);
      const label = element("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, axis);
      label.textContent = number(value, places);
    }
    const span = end - start;
    const timeStep = TIME_STEPS.find((candidate) => span / candidate <= 6) || 86400000 * Math.ceil(span / 86400000 / 6);
    for (let ms = Math.ceil(start / timeStep) * timeStep; ms <= end; ms += timeStep) {
      if (x(ms) < left + 24 || x(ms) > right - 24) continue; // a label cut by the edge helps nobody
      const label = element("text", { x: x(ms), y: HEIGHT - 6, "text-anchor": "middle" }, axis);
      label.textContent = span > 86400000 ? utc(ms).slice(5, 16) : utc(ms, false).slice(0, timeStep >= 60000 ? 5 : 8);
    }

    if (points.length) {
      let clock = points[0][0];
      let path = `M${x(clock).toFixed(1)},${y(points[0][3]).toFixed(1)}`;
      for (let index = 1; index < points.length; index += 1) {
        clock = Math.max(clock, points[index][0]); // a late event never moves the line back in time
        path += `H${x(clock).toFixed(1)}V${y(points[index][3]).toFixed(1)}`;
      }
      path += `H${x(end).toFixed(1)}`;
      element("path", { class: "line", d: path }, svg);
    }

    for (const marker of markers) {
      const cx = x(marker.timestamp);
      const cy = y(Number(marker.balance));
      const count = marker.count || 1;
      let node;
      let text;
      if (marker.kind === "adl") {
        node = element("circle", {
          class: "marker adl", "data-reason": marker.reason, cx, cy, r: 3.5 + Math.min(3, Math.log2(count)),
          fill: colorOf(marker.reason),
        }, svg);
        text = `ADL ${marker.reason}` + (count > 1 ? ` ×${count}` : "");
      } else {
        const size = 6;
        const shape = marker.kind === "top_up"
          ? `M${cx},${cy - size}L${cx + size},${cy + size * 0.7}L${cx - size},${cy + size * 0.7}Z`
          : marker.kind === "withdrawal"
            ? `M${cx},${cy + size}L${cx + size},${cy - size * 0.7}L${cx - size},${cy - size * 0.7}Z`
            : `M${cx},${cy - size}L${cx + size},${cy}L${cx},${cy + size}L${cx - size},${cy}Z`;
        node = element("path", {
          class: "marker operation", "data-kind": marker.kind, d: shape,
          fill: KIND_COLORS[marker.kind] || OTHER_KIND_COLOR,
        }, svg);
        text = marker.kind.replace("_", "-") + (count > 1 ? ` ×${count}` : "");
      }
      const detail = marker.detail
        ? Object.entries(marker.detail).map(([name, value]) => `${name} ${value}`).join(", ")
        : "";
      title(node, `${text} at ${utc(marker.timestamp)} UTC, balance ${marker.balance}, sequence ${marker.sequence}` +
        (detail ? `\n${detail}` : ""));
    }
  }

  function swatch(parent, label, draw) {
    const item = document.createElement("span");
    const icon = element("svg", { width: 14, height: 14, viewBox: "0 0 14 14" });
    draw(icon);
    const text = document.createElement("span");
    text.textContent = label;
    item.append(icon, text);
    parent.appendChild(item);
  }

  function renderLegend() {
    const legend = byId("legend");
    const reasons = new Set();
    const kinds = new Set();
    let shaded = false;
    for (const entry of funds.values()) {
      for (const marker of entry.markers.concat(entry.liveMarkers)) {
        if (marker.kind === "adl") reasons.add(marker.reason);
        else kinds.add(marker.kind);
      }
      shaded = shaded || (entry.chart && entry.chart.svg.dataset.drawdowns !== "0");
    }
    const key = JSON.stringify([[...reasons].sort(), [...kinds].sort(), shaded]);
    if (legend.dataset.key === key) return;
    legend.dataset.key = key;
    legend.replaceChildren();
    swatch(legend, "balance", (icon) => element("path", { d: "M1,10H6V4H13", fill: "none", stroke: "#1f5fbf", "stroke-width": 2 }, icon));
    for (const reason of [...reasons].sort()) {
      swatch(legend, `ADL: ${reason}`, (icon) => element("circle", { cx: 7, cy: 7, r: 5, fill: colorOf(reason) }, icon));
    }
    for (const kind of [...kinds].sort()) {
      swatch(legend, kind.replace("_", "-"), (icon) => element("path", {
        d: kind === "withdrawal" ? "M7,13L13,3H1Z" : "M7,1L13,11H1Z", fill: KIND_COLORS[kind] || OTHER_KIND_COLOR,
      }, icon));
    }
    if (shaded) {
      swatch(legend, "ADL drawdown", (icon) => element("rect", { width: 14, height: 14, fill: "rgba(214, 39, 40, 0.25)" }, icon));
    }
  }

  // --- the worker ----------------------------------------------------------------------------------------

  async function loadHistory() {
    try {
      const response = await fetch(`dashboard/history${location.search}`, { cache: "no-store" });
      const body = await response.json();
      if (!response.ok) {
        notice(`history: ${body.detail || response.statusText}`);
        if (response.status === 503) setTimeout(loadHistory, 1000 * Number(response.headers.get("Retry-After") || 2));
        if (covered === null) applyHistory({ funds: {}, markers: [], states: [], last_sequence: null });
        return;
      }
      applyHistory(body);
    } catch (error) {
      notice(`history: ${error}`);
      setTimeout(loadHistory, 5000);
    }
  }

  function connect() {
    const status = byId("connection");
    const source = new EventSource("dashboard/events");
    source.addEventListener("snapshot", (event) => applySnapshot(JSON.parse(event.data)));
    source.addEventListener("update", (event) => applyUpdate(JSON.parse(event.data)));
    source.addEventListener("open", () => {
      status.dataset.status = "live";
      status.textContent = "live";
      if (reconnecting) {
        reconnecting = false;
        loadHistory(); // fill what happened while the stream was down
      }
    });
    source.addEventListener("error", () => {
      reconnecting = true;
      status.dataset.status = "reconnecting";
      status.textContent = "reconnecting";
    });
  }

  window.addEventListener("resize", () => {
    for (const name of funds.keys()) dirty.add(name);
    schedule();
  });
  setInterval(() => {
    for (const entry of funds.values()) {
      if (entry.cells) entry.cells.committed.textContent = ago(entry.doc && entry.doc.committed_ms);
    }
  }, 1000);

  connect(); // first, so that nothing committed between the history read and the stream is missed
  loadHistory();
})();

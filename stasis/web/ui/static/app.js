// stasis web UI: one page over the admin API (docs/admin-api.md).
//
// Everything shown here came from clients and models and is hostile by
// assumption: data goes into the page only as text (textContent, attribute
// values of our own elements), never as markup, and never as a link target.
// The page's Content-Security-Policy forbids inline script and style as a
// second line of defence.

const API = "/_stasis/api";
const PAGE_SIZE = 50;
const RECENT_EVERY_MS = 1500;
const STATS_EVERY_MS = 5000;
const RECENT_KEEP = 100;
const KNOWN_PROVIDERS = ["openai", "anthropic", "azure", "bedrock", "gemini"];
const KEY_SHAPE = /^[0-9a-f]{16,128}$/;

const $ = (id) => document.getElementById(id);

// ---- small helpers -------------------------------------------------------

/** An element with a class, text and children; the only way data enters the page. */
function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.class) node.className = options.class;
  if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
  if (options.title) node.title = String(options.title);
  for (const child of children) if (child) node.append(child);
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function formatNumber(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

function formatBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function formatTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (v) => String(v).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function formatClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

/**
 * JSON indented for reading, with what fits on a line (a header pair, a short
 * message) kept on one: JSON.stringify's indentation alone spends five lines
 * on every header.
 */
function pretty(value, indent = "") {
  const flat = JSON.stringify(value, null, 1);
  if (flat === undefined) return "null";
  // Only structure has line breaks: a string's own are escaped as \n.
  const oneLine = flat.replace(/([[{])\n\s*/g, "$1").replace(/\n\s*([\]}])/g, "$1").replace(/\n\s*/g, " ");
  if (value === null || typeof value !== "object" || indent.length + oneLine.length <= 88) return oneLine;
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return "[\n" + value.map((v) => inner + pretty(v, inner)).join(",\n") + "\n" + indent + "]";
  }
  const keys = Object.keys(value);
  if (keys.length === 0) return "{}";
  return "{\n" + keys.map((k) => inner + JSON.stringify(k) + ": " + pretty(value[k], inner)).join(",\n") + "\n" + indent + "}";
}

function entryHash(key) {
  // Only a key of a key's shape becomes part of a URL, and only in our own
  // fragment: nothing from data is ever a link's whole target.
  return KEY_SHAPE.test(key) ? "#/entry/" + key : null;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

// ---- the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: { Accept: "application/json" }, cache: "no-store" };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(API + path, init);
  let document = null;
  try { document = await response.json(); } catch (_) { document = null; }
  if (!response.ok) {
    const message = (document && document.error && document.error.message) || response.statusText;
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  return document;
}

function notice(message) {
  const box = $("notice");
  if (message) { box.textContent = message; box.hidden = false; } else { box.hidden = true; }
}

// ---- figures, chart, tokens saved --------------------------------------

async function refreshStats() {
  const stats = await api("/stats");
  $("fig-entries").textContent = formatNumber(stats.totalEntries);
  $("fig-hitrate").textContent = typeof stats.hitRate === "number" ? (stats.hitRate * 100).toFixed(1) + " %" : "–";
  $("fig-saved").textContent = formatNumber(stats.totalTokensSaved);
  $("fig-db").textContent = formatBytes(stats.dbSizeBytes);
  state.totalEntries = stats.totalEntries;
  fillSaved($("by-model"), stats.tokensSavedByModel || [], "model");
  fillSaved($("by-namespace"), stats.tokensSavedByNamespace || [], "namespace");
  remember($("namespaces"), (stats.tokensSavedByNamespace || []).map((r) => r.namespace));
  remember($("providers"), KNOWN_PROVIDERS);
  updatePurgeLabel();
}

function fillSaved(tbody, rows, field) {
  clear(tbody);
  if (rows.length === 0) {
    const td = el("td", { class: "muted", text: "nothing saved yet" });
    td.colSpan = 3;
    tbody.append(el("tr", {}, [td]));
  }
  for (const row of rows) {
    const name = row[field];
    tbody.append(el("tr", {}, [
      el("td", { text: name === "" ? "(default)" : name, class: name === "" ? "muted" : "", title: name }),
      el("td", { class: "num", text: formatNumber(row.entries) }),
      el("td", { class: "num", text: formatNumber(row.tokensSaved) }),
    ]));
  }
}

/** Add values to a datalist's options once each: suggestions for the filters. */
function remember(datalist, values) {
  const known = new Set(Array.from(datalist.options, (o) => o.value));
  for (const value of values) {
    if (typeof value === "string" && value !== "" && !known.has(value)) {
      const option = document.createElement("option");
      option.value = value;
      datalist.append(option);
      known.add(value);
    }
  }
}

async function refreshSeries() {
  const series = await api("/series?minutes=60");
  drawChart($("chart"), series.points || []);
}

function drawChart(box, points) {
  const width = 600, height = 120, bottom = 16;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const top = Math.max(1, ...points.map((p) => (p.hits || 0) + (p.misses || 0) + (p.bypasses || 0)));
  const plot = height - bottom;
  root.append(svg("line", { x1: 0, y1: plot + 0.5, x2: width, y2: plot + 0.5, class: "axis" }));
  const slots = Math.max(points.length, 30);
  const step = width / slots;
  const barWidth = Math.max(1, step * 0.75);
  points.forEach((point, i) => {
    const x = width - (points.length - i) * step + (step - barWidth) / 2;
    let y = plot;
    for (const [field, cls] of [["hits", "bar-hit"], ["misses", "bar-miss"], ["bypasses", "bar-bypass"]]) {
      const value = point[field] || 0;
      if (value <= 0) continue;
      const h = (value / top) * (plot - 4);
      y -= h;
      const rect = svg("rect", { x: x.toFixed(2), y: y.toFixed(2), width: barWidth.toFixed(2), height: h.toFixed(2), class: cls });
      const title = svg("title");
      title.textContent = `${formatClock(point.at)}: ${point.hits || 0} hits, ${point.misses || 0} misses, ${point.bypasses || 0} bypasses`;
      rect.append(title);
      root.append(rect);
    }
  });
  const peak = svg("text", { x: 2, y: 10, class: "label" });
  peak.textContent = `${top}/min`;
  root.append(peak);
  if (points.length > 0) {
    const last = svg("text", { x: width - 2, y: height - 3, class: "label", "text-anchor": "end" });
    last.textContent = formatClock(points[points.length - 1].at).slice(0, 5);
    root.append(last);
    const firstX = Math.max(2, width - points.length * step);
    if (width - firstX > 80) { // room for both times without overlap
      const first = svg("text", { x: firstX, y: height - 3, class: "label" });
      first.textContent = formatClock(points[0].at).slice(0, 5);
      root.append(first);
    }
  } else {
    const none = svg("text", { x: width / 2, y: plot / 2, class: "label", "text-anchor": "middle" });
    none.textContent = "no requests yet";
    root.append(none);
  }
  clear(box).append(root);
}

// ---- the entries table ---------------------------------------------------

const state = {
  // cursors[i] is the cursor that fetched page i; page 0 has none.
  cursors: [null],
  page: 0,
  next: null,
  rows: 0,
  listings: 0,
  totalEntries: null,
  recentAfter: null,
  timers: [],
};

function currentFilter() {
  const filter = {};
  for (const name of ["q", "provider", "namespace"]) {
    const value = $(name).value.trim();
    if (value !== "") filter[name] = value;
  }
  return filter;
}

async function loadEntries() {
  const params = new URLSearchParams(currentFilter());
  params.set("limit", String(PAGE_SIZE));
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  // Only the latest listing asked for is shown: an earlier one (an older
  // filter, a poll's reload) may answer after it.
  const asked = ++state.listings;
  const page = await api("/entries?" + params.toString());
  if (asked !== state.listings) return;
  const tbody = clear($("entries"));
  for (const entry of page.entries) tbody.append(entryRow(entry));
  remember($("providers"), page.entries.map((e) => e.provider));
  remember($("namespaces"), page.entries.map((e) => e.namespace));
  state.next = page.cursor || null;
  state.rows = page.entries.length;
  $("entries-empty").hidden = page.entries.length > 0;
  $("older").disabled = !state.next;
  $("newer").disabled = state.page === 0;
  $("page-label").textContent = page.entries.length ? `page ${state.page + 1}` : "";
  updatePurgeLabel();
}

function entryRow(entry) {
  const row = el("tr", {}, [
    el("td", { text: formatTime(entry.storedAt), title: entry.storedAt }),
    el("td", { text: entry.provider }),
    el("td", { class: "model", text: entry.model || "–", title: entry.model }),
    el("td", { class: "path mono", text: `${entry.method} ${entry.path}`, title: entry.path }),
    el("td", { text: entry.namespace === "" ? "(default)" : entry.namespace, class: entry.namespace === "" ? "muted" : "" }),
    el("td", { class: "num", text: entry.status }),
    el("td", { class: "num", text: formatNumber(entry.totalTokens), title: `${entry.inputTokens} in, ${entry.outputTokens} out` }),
    el("td", { class: "num", text: formatNumber(entry.hits) }),
    el("td", { class: "num", text: formatBytes(entry.sizeBytes) }),
  ]);
  row.dataset.key = entry.key;
  const hash = entryHash(entry.key);
  if (hash) {
    // A row is a link to its entry, from the keyboard too.
    row.tabIndex = 0;
    row.addEventListener("click", () => { location.hash = hash; });
    row.addEventListener("keydown", (event) => { if (event.key === "Enter") location.hash = hash; });
  }
  return row;
}

function restartPaging() {
  state.cursors = [null];
  state.page = 0;
  loadEntries().then(() => notice(null), showError);
}

function onFilterInput() {
  clearTimeout(state.filterTimer);
  state.filterTimer = setTimeout(restartPaging, 250);
  $("purge-confirm").hidden = true;
}

function purgeCount() {
  const filter = currentFilter();
  if (Object.keys(filter).length === 0 && typeof state.totalEntries === "number") return state.totalEntries;
  if (state.page === 0 && !state.next) return state.rows;
  return null;
}

function updatePurgeLabel() {
  const n = purgeCount();
  const button = $("purge");
  button.textContent = n === null ? "Purge all matching…" : `Purge ${formatNumber(n)} matching…`;
  button.disabled = n === 0;
}

function showPurgeConfirm() {
  const filter = currentFilter();
  const n = purgeCount();
  $("purge-count").textContent = n === null
    ? `every entry (more than ${PAGE_SIZE})`
    : `${formatNumber(n)} ${n === 1 ? "entry" : "entries"}`;
  $("purge-filter").textContent = Object.keys(filter).length ? pretty(filter) : "no filter: everything in the cache";
  $("purge-confirm").hidden = false;
  $("purge-no").focus();
}

async function purge() {
  const filter = currentFilter();
  const body = Object.keys(filter).length ? filter : { everything: true };
  const result = await api("/purge", { method: "POST", body });
  $("purge-confirm").hidden = true;
  notice(null);
  restartPaging();
  refreshStats().catch(showError);
  return result;
}

// ---- recent requests ------------------------------------------------------

async function refreshRecent() {
  const query = state.recentAfter === null ? "" : "?after=" + encodeURIComponent(state.recentAfter);
  const recent = await api("/recent" + query);
  const list = $("recent");
  const requests = recent.requests || [];
  // No animation for new rows: under load they come by the hundred, and a
  // page left open must cost the machine next to nothing (bench section m).
  for (const request of requests.slice(-RECENT_KEEP)) list.prepend(recentItem(request));
  // A miss may be a new entry: the first page of the list shows it at once.
  if (requests.some((r) => r.cache === "MISS") && state.page === 0 && shownKey === null) {
    loadEntries().catch(showError);
  }
  while (list.children.length > RECENT_KEEP) list.lastElementChild.remove();
  if (typeof recent.last === "number") state.recentAfter = recent.last;
  $("recent-empty").hidden = list.children.length > 0;
}

function recentItem(request) {
  const cache = ["HIT", "STALE", "MISS", "BYPASS"].includes(request.cache) ? request.cache : null;
  const label = cache || (request.error ? "ERROR" : String(request.status));
  // A miss answered with an error (a replay miss) is a miss in red.
  const tone = request.error ? " failed" : "";
  const facts = [request.detail, request.model, request.namespace ? "ns " + request.namespace : null,
    String(request.status), typeof request.ms === "number" ? request.ms.toFixed(1) + " ms" : null];
  const about = facts.filter(Boolean).join(" · ");
  const line = el("div", { class: "line" }, [
    el("span", { class: "badge " + label + tone, text: label }),
    el("span", { class: "what mono", text: `${request.method} ${request.path}`, title: request.path }),
  ]);
  // A link only where there is an entry to open: a hit's, or a miss that was
  // stored (a replay miss, or an answer not stored, has a key and no entry).
  const stored = cache === "HIT" || cache === "STALE" || request.detail === "stored";
  const hash = request.key && stored ? entryHash(request.key) : null;
  if (hash) {
    const link = el("a", { text: "entry" });
    link.href = hash;
    line.append(link);
  }
  line.append(el("span", { class: "when", text: formatClock(request.at) }));
  const item = el("li", {}, [
    line,
    el("div", { class: "about muted", text: about, title: about }),
  ]);
  item.dataset.seq = String(request.seq);
  if (request.error) {
    item.append(el("details", {}, [
      el("summary", { text: `${request.error.type}: ${request.error.message || ""}` }),
      el("pre", { text: pretty(request.error) }),
    ]));
  }
  return item;
}

// ---- one entry ---------------------------------------------------------------

let shownKey = null;

async function showEntry(key) {
  shownKey = key;
  $("delete-confirm").hidden = true;
  $("entry-title").textContent = key;
  for (const id of ["entry-meta", "conversation", "answer", "raw-request", "raw-response", "raw-stream", "events"]) clear($(id));
  $("events-box").hidden = true;
  let doc;
  try {
    doc = await api("/entries/" + encodeURIComponent(key));
  } catch (error) {
    if (shownKey === key) $("conversation").append(el("p", { class: "empty", text: error.message }));
    return;
  }
  if (shownKey !== key) return;
  const meta = $("entry-meta");
  const fields = [
    ["Provider", doc.provider], ["Model", doc.model || "–"], ["Namespace", doc.namespace === "" ? "(default)" : doc.namespace],
    ["Request", `${doc.method} ${doc.path}`], ["Status", doc.status],
    ["Stored at", formatTime(doc.storedAt)], ["Expires", formatTime(doc.expiresAt)],
    ["Tokens", `${formatNumber(doc.inputTokens)} in · ${formatNumber(doc.outputTokens)} out`],
    ["Hits", formatNumber(doc.hits)], ["Last hit", formatTime(doc.lastHitAt)], ["Size", formatBytes(doc.sizeBytes)],
  ];
  for (const [name, value] of fields) {
    const wide = name === "Request" ? "wide" : "";
    meta.append(el("div", { class: wide }, [el("dt", { text: name }), el("dd", { text: value, title: value })]));
  }

  const conversation = $("conversation");
  for (const turn of doc.conversation || []) conversation.append(bubble(turn.role, turn.text));
  if (!conversation.children.length) {
    conversation.append(el("p", { class: "empty", text: "No conversation in this request: see its JSON." }));
  }
  const answer = $("answer");
  if (typeof doc.answer === "string") answer.append(bubble("assistant", doc.answer));
  else answer.append(el("p", { class: "empty", text: "No text in this answer: see its JSON." }));

  const response = doc.response || {};
  if (response.stream && Array.isArray(response.events)) {
    $("events-summary").textContent = `Raw events (${response.events.length})`;
    $("events").textContent = response.events.map(eventText).join("\n\n");
    $("events-box").hidden = false;
  }
  $("raw-request").textContent = doc.request ? pretty(doc.request) : "The request was not stored.";
  const shown = { ...response };
  const streamBody = $("raw-stream");
  streamBody.hidden = !(shown.stream && shown.bodyEncoding === "text");
  if (!streamBody.hidden) {
    // An event stream reads as itself, not as one long JSON string; its text
    // is the answer above and its events are one click away.
    streamBody.textContent = shown.body;
    delete shown.body;
    delete shown.text;
    delete shown.events;
  }
  $("raw-response").textContent = pretty(shown);
}

/** One recorded event as a stream has it (``event:``, ``data:``), after its time. */
function eventText(event) {
  const at = typeof event.atMs === "number" ? `+${event.atMs} ms\n` : "";
  const name = event.name ? `event: ${event.name}\n` : "";
  // A JSON event's data comes parsed; written back compactly, as it was sent.
  const data = typeof event.data === "string" ? event.data : JSON.stringify(event.data);
  return `${at}${name}data: ${data}`;
}

function bubble(role, text) {
  const name = typeof role === "string" && role ? role : "unknown";
  const known = ["user", "assistant", "system", "tool"].includes(name) ? name : "other";
  return el("div", { class: "bubble " + known }, [
    el("div", { class: "role", text: name }),
    el("div", { class: "text", text: text === null || text === undefined ? "" : text }),
  ]);
}

async function deleteShown() {
  const key = shownKey;
  try {
    await api("/entries/" + encodeURIComponent(key), { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  $("delete-confirm").hidden = true;
  location.hash = "#/";
}

// ---- routing, polling ----------------------------------------------------------

function route() {
  const match = /^#\/entry\/(.+)$/.exec(location.hash);
  $("view-list").hidden = Boolean(match);
  $("view-entry").hidden = !match;
  if (match) {
    showEntry(decodeURIComponent(match[1])).catch(showError);
  } else {
    shownKey = null;
    loadEntries().catch(showError);
  }
}

function showError(error) {
  notice(error && error.message ? error.message : String(error));
}

function every(ms, task) {
  const run = () => task().then(() => notice(null), showError);
  run();
  state.timers.push(setInterval(run, ms));
}

function startPolling() {
  stopPolling();
  every(RECENT_EVERY_MS, refreshRecent);
  every(STATS_EVERY_MS, () => Promise.all([refreshStats(), refreshSeries()]));
  $("live").classList.remove("paused");
  $("live").textContent = "live";
}

function stopPolling() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  $("live").classList.add("paused");
  $("live").textContent = "paused";
}

function start() {
  for (const id of ["q", "provider", "namespace"]) $(id).addEventListener("input", onFilterInput);
  $("older").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadEntries().catch(showError);
  });
  $("newer").addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    loadEntries().catch(showError);
  });
  $("purge").addEventListener("click", showPurgeConfirm);
  $("purge-no").addEventListener("click", () => { $("purge-confirm").hidden = true; });
  $("purge-yes").addEventListener("click", () => { purge().catch(showError); });
  $("delete").addEventListener("click", () => { $("delete-confirm").hidden = false; $("delete-no").focus(); });
  $("delete-no").addEventListener("click", () => { $("delete-confirm").hidden = true; });
  $("delete-yes").addEventListener("click", () => { deleteShown().catch(showError); });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") for (const id of ["purge-confirm", "delete-confirm"]) $(id).hidden = true;
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") stopPolling(); else startPolling();
  });
  route();
  if (document.visibilityState !== "hidden") startPolling();
}

start();

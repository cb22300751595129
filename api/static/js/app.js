// The operations dashboard: sign-in, hash routes (#/overview, #/stock, ...), views that load
// from the REST API and then follow the live event stream.

import { all, api, ApiError, setToken, token, whenUnauthorized } from "./api.js";
import { routeMap, temperatureChart } from "./charts.js";
import { serviceView } from "./service.js";
import { clear, debounce, fmtNumber, fmtTime, h, label, table, tableRow, time } from "./dom.js";
import { connectLive } from "./live.js";
import { ordersView, replenishmentView } from "./orders.js";

const $ = (id) => document.getElementById(id);
const STATUSES = ["planned", "loading", "in_transit", "arrived", "delivered"];
const SEVERITIES = ["critical", "warning", "info"];
const ACK_ROLES = new Set(["operator", "admin"]);
const TEMP_ALARMS = new Set(["temperature_high", "temperature_low"]);
const EXTERNAL = new Set(["supplier", "customer", "inventory_loss"]);

const state = { me: null, live: null, view: null, handlers: {} };

// --- announcements (one polite live region for everything that changes by itself) --------------

function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  // A fresh text node after a tick makes screen readers read repeated messages too.
  setTimeout(() => { region.textContent = text; }, 50);
}

// --- session ---------------------------------------------------------------------------------

function showSignIn(message) {
  if (state.live) state.live.close();
  state.live = null;
  state.me = null;
  setToken(null);
  $("nav").hidden = true;
  $("session").hidden = true;
  clear($("view"));
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

async function signIn(candidate) {
  setToken(candidate);
  const me = await api("/me");
  state.me = me;
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  $("who").textContent = `${me.label || "token"} (${me.role})`;
  await startLive();
  if (!location.hash || location.hash === "#main") location.hash = "#/overview";
  else await route();
}

async function startLive() {
  // The overview's head is the outbox id its counts include: the stream continues exactly there.
  const overview = await api("/overview", { params: { since: localMidnight() } });
  state.live = connectLive({
    ticket: async () => (await api("/stream-tickets", { method: "POST" })).ticket,
    after: overview.events_head,
    onEvent: (kind, data) => {
      document.body.dataset.lastEvent = kind;
      const handler = state.handlers[kind];
      if (handler) handler(data);
    },
    onState: (s) => {
      const el = $("live-state");
      el.dataset.state = s;
      el.textContent = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline" }[s] || s;
      document.body.dataset.live = s;
    },
    // A stream that gave up may mean the token was revoked: /me says, and a 401 signs out.
    onGiveUp: async () => {
      try { await api("/me"); return true; } catch { return false; }
    },
  });
}

function localMidnight() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d.toISOString();
}

// --- routing ---------------------------------------------------------------------------------

const VIEWS = {
  overview: overviewView,
  stock: stockView,
  movements: movementsView,
  shipments: shipmentsView,
  alarms: alarmsView,
  devices: devicesView,
  orders: ordersView,
  replenishment: replenishmentView,
  service: serviceView,
};

async function route() {
  if (!state.me) return;
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS[name] ? name : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${view}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  state.handlers = {};
  const root = clear($("view"));
  document.body.dataset.view = view;
  document.body.dataset.loaded = "";
  try {
    const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
    await VIEWS[view](root, arg);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    root.append(h("p", { class: "error", role: "alert" }, `Could not load this view: ${err.message}`));
  }
  document.body.dataset.loaded = view;
  const heading = root.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
  document.title = `${heading ? heading.textContent + " · " : ""}cargotrace operations`;
}

// --- overview --------------------------------------------------------------------------------

async function overviewView(root) {
  root.append(h("h1", null, "Overview"));
  const cards = h("div", { class: "cards" });
  root.append(cards);
  const recent = h("section", { class: "panel", "aria-labelledby": "recent-title" });
  root.append(recent);

  async function load() {
    const o = await api("/overview", { params: { since: localMidnight() } });
    const online = o.devices_online;
    clear(cards).append(
      card("Open alarms", "ov-alarms", h("p", { class: "big" }, SEVERITIES.reduce((n, k) => n + (o.alarms_active[k] || 0), 0)),
        h("ul", { class: "legend" }, SEVERITIES.map((sev) =>
          h("li", null, h("span", { class: `badge sev-${sev}` }, `${o.alarms_active[sev] || 0} ${sev}`)))),
        h("p", { class: "muted" }, `${o.alarms_unacknowledged} not acknowledged`)),
      card("Shipments", "ov-shipments", h("p", { class: "big" }, Object.values(o.shipments).reduce((a, b) => a + b, 0)),
        h("ul", { class: "legend" }, [...STATUSES, "cancelled"].filter((st) => o.shipments[st]).map((st) =>
          h("li", null, h("span", { class: "badge" }, `${o.shipments[st]} ${label(st)}`))))),
      card("Devices", "ov-devices", h("p", { class: "big" }, `${online} / ${o.devices_total}`),
        h("p", null, h("span", { class: "badge ok" }, `${online} online`), " ",
          h("span", { class: o.devices_total - online ? "badge warn" : "badge" }, `${o.devices_total - online} offline`))),
      card("Movements today", "ov-movements", h("p", { class: "big", id: "movements-today" }, o.movements_since),
        h("p", { class: "muted" }, `since ${fmtTime(o.since)}`)),
    );
  }

  function card(title, id, ...body) {
    return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...body);
  }

  const recentColumns = movementColumns().slice(0, 5);
  async function loadRecent() {
    const page = await api("/movements", { params: { limit: 8 } });
    clear(recent).append(h("h2", { id: "recent-title" }, "Latest movements"),
      table({ columns: recentColumns, rows: page.items }));
  }

  await Promise.all([load(), loadRecent()]);
  const reload = debounce(() => load().catch(() => {}), 300);
  state.handlers = {
    movement: (m) => {
      reload();
      const body = recent.querySelector("tbody");
      if (body) body.prepend(tableRow(recentColumns, m, () => ({ class: "fresh" })));
    },
    alarm: reload,
    shipment: reload,
    shipment_event: reload,
    device: reload,
  };
}

// --- stock -----------------------------------------------------------------------------------

function expiryCell(expiry) {
  if (!expiry) return "—";
  const days = Math.floor((new Date(expiry) - new Date(new Date().toDateString())) / 86400000);
  const text = new Date(expiry + "T00:00:00").toLocaleDateString();
  if (days < 0) return h("span", { class: "badge bad" }, `${text} (expired)`);
  if (days <= 30) return h("span", { class: "badge warn" }, `${text} (${days} d)`);
  return text;
}

async function stockView(root) {
  root.append(h("h1", null, "Stock"));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter stock" },
    field("stock-sku", "Item (SKU)", "sku"),
    field("stock-location", "Location", "location"),
    field("stock-site", "Site", "site"),
    h("div", null, h("input", { id: "stock-external", name: "external", type: "checkbox" }), " ",
      h("label", { for: "stock-external", class: "inline" }, "Show supplier, customer and loss locations")),
    h("div", null, h("label", { for: "stock-group" }, "Group by"),
      h("select", { id: "stock-group", name: "group" },
        h("option", { value: "location" }, "Location"), h("option", { value: "sku" }, "Item"))),
    h("button", { type: "submit" }, "Apply"));
  const out = h("div", { id: "stock-table" });
  root.append(form, out);

  async function load() {
    const f = new FormData(form);
    const params = { sku: f.get("sku").trim(), location: f.get("location").trim(), site: f.get("site").trim() };
    const [found, locations] = await Promise.all([all("/stock", params), all("/locations")]);
    // Double entry leaves negative balances at suppliers and stock at customers: the ledger needs
    // them, the desk usually does not.
    const external = new Set(locations.filter((l) => EXTERNAL.has(l.type)).map((l) => l.code));
    const rows = f.get("external") ? found : found.filter((r) => !external.has(r.location));
    const group = f.get("group");
    const other = group === "location" ? "sku" : "location";
    rows.sort((a, b) => a[group].localeCompare(b[group]) || a[other].localeCompare(b[other]) ||
      String(a.lot ?? "").localeCompare(String(b.lot ?? "")));
    const columns = [
      { title: group === "location" ? "Item" : "Location", cell: (r) => r[other] },
      { title: "Lot", cell: (r) => r.lot ?? "—" },
      { title: "Expiry", cell: (r) => expiryCell(r.expiry) },
      { title: "Quantity", num: true, cell: (r) => fmtNumber(r.qty, 3) },
    ];
    const t = table({ caption: `${rows.length} balance${rows.length === 1 ? "" : "s"} by ${group === "sku" ? "item" : "location"}`, columns, rows: [] });
    const body = t.querySelector("tbody");
    let current = null;
    for (const r of rows) {
      if (r[group] !== current) {
        current = r[group];
        const total = rows.filter((x) => x[group] === current).reduce((n, x) => n + x.qty, 0);
        body.append(h("tr", { class: "group-row" },
          h("th", { scope: "rowgroup", colspan: columns.length }, `${group === "sku" ? "Item" : "Location"} ${current} · total ${fmtNumber(total, 3)}`)));
      }
      body.append(tableRow(columns, r));
    }
    clear(out).append(rows.length ? t : h("p", { class: "muted" }, "No stock matches these filters."));
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(showError(out)); });
  $("stock-group").addEventListener("change", () => load().catch(showError(out)));
  $("stock-external").addEventListener("change", () => load().catch(showError(out)));
  await load();
  const reload = debounce(() => load().catch(() => {}), 500);
  state.handlers = { movement: reload };
}

function field(id, text, name, attrs = {}) {
  return h("div", null, h("label", { for: id }, text), h("input", { id, name, type: "text", autocomplete: "off", ...attrs }));
}

function showError(el) {
  return (err) => {
    if (err instanceof ApiError && err.status === 401) return;
    el.prepend(h("p", { class: "error", role: "alert" }, err.message));
  };
}

// --- movements -------------------------------------------------------------------------------

function movementColumns() {
  return [
    { title: "Time", cell: (m) => time(m.ts) },
    { title: "Item", cell: (m) => m.sku },
    { title: "Quantity", num: true, cell: (m) => fmtNumber(m.qty, 3) },
    { title: "From → to", cell: (m) => `${m.from_location} → ${m.to_location}` },
    { title: "Step", cell: (m) => label(m.biz_step) },
    { title: "Lot", cell: (m) => m.lot ?? "—" },
    { title: "Reference", cell: (m) => m.ref ?? "—" },
    { title: "Device", cell: (m) => m.device_id ?? "—" },
  ];
}

async function movementsView(root) {
  root.append(h("h1", null, "Movements"),
    h("p", { class: "muted" }, "The stock ledger, newest first. New movements appear here as they are recorded."));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter movements" },
    field("mv-sku", "Item (SKU)", "sku"), field("mv-location", "Location", "location"), field("mv-ref", "Reference", "ref"),
    h("button", { type: "submit" }, "Apply"));
  const out = h("div", { id: "movements-table" });
  root.append(form, out);
  const columns = movementColumns();
  const shown = new Set();
  let filter = {};

  async function load() {
    const f = new FormData(form);
    filter = { sku: f.get("sku").trim(), location: f.get("location").trim(), ref: f.get("ref").trim() };
    const page = await api("/movements", { params: { ...filter, limit: 100 } });
    shown.clear();
    page.items.forEach((m) => shown.add(m.id));
    clear(out).append(table({ caption: "Latest 100 movements", columns, rows: page.items, rowAttrs: (m) => ({ "data-id": m.id }) }));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(showError(out)); });
  await load();

  state.handlers = {
    movement: (m) => {
      if (shown.has(m.id)) return;  // already in the first page (loaded after it was committed)
      if (filter.sku && m.sku !== filter.sku) return;
      if (filter.location && m.from_location !== filter.location && m.to_location !== filter.location) return;
      if (filter.ref && m.ref !== filter.ref) return;
      shown.add(m.id);
      out.querySelector("tbody").prepend(tableRow(columns, m, () => ({ class: "fresh", "data-id": m.id })));
      announce(`New movement: ${fmtNumber(m.qty, 3)} × ${m.sku}, ${m.from_location} to ${m.to_location}`);
    },
  };
}

// --- shipments -------------------------------------------------------------------------------

function statusBadge(status, delayed) {
  const cls = status === "delivered" ? "badge ok" : status === "cancelled" ? "badge bad" : "badge";
  return [h("span", { class: cls }, label(status)), delayed ? [" ", h("span", { class: "badge warn" }, "delayed")] : null];
}

async function shipmentsView(root, ref) {
  if (ref) return shipmentView(root, ref);
  root.append(h("h1", null, "Shipments"));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter shipments" },
    h("div", null, h("label", { for: "sh-status" }, "Status"),
      h("select", { id: "sh-status", name: "status" }, h("option", { value: "" }, "All"),
        [...STATUSES, "cancelled"].map((st) => h("option", { value: st }, label(st))))),
    h("button", { type: "submit" }, "Apply"));
  const out = h("div");
  root.append(form, out);
  const columns = [
    { title: "Shipment", cell: (r) => h("a", { href: `#/shipments/${encodeURIComponent(r.ref)}` }, r.ref) },
    { title: "Status", cell: (r) => statusBadge(r.status, r.delayed) },
    { title: "ETA", cell: (r) => time(r.eta) },
    { title: "Promised", cell: (r) => time(r.promised_at) },
    { title: "Vehicle", cell: (r) => r.vehicle },
    { title: "Destination", cell: (r) => r.destination },
    { title: "Customer", cell: (r) => r.customer },
  ];
  async function load() {
    const rows = await all("/shipments", { status: new FormData(form).get("status") });
    clear(out).append(rows.length ? table({ caption: `${rows.length} shipments`, columns, rows })
      : h("p", { class: "muted" }, "No shipments."));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(showError(out)); });
  await load();
  const reload = debounce(() => load().catch(() => {}), 500);
  state.handlers = { shipment: reload, shipment_event: reload };
}

async function originFence(originCode) {
  const loc = await api(`/locations/${encodeURIComponent(originCode)}`);
  const site = await api(`/sites/${encodeURIComponent(loc.site)}`);
  return site.geofence ? { code: site.geofence, fence: await api(`/geofences/${encodeURIComponent(site.geofence)}`) } : null;
}

async function shipmentView(root, ref) {
  const sh = await api(`/shipments/${encodeURIComponent(ref)}`);
  root.append(h("p", null, h("a", { href: "#/shipments" }, "← All shipments")),
    h("h1", null, `Shipment ${sh.ref}`));

  const current = STATUSES.indexOf(sh.status);
  const progress = h("ol", { class: "progress", "aria-label": "Status" }, STATUSES.map((st, i) =>
    h("li", { class: i < current ? "done" : i === current ? "current" : null, "aria-current": i === current ? "step" : null }, label(st))));
  const facts = h("dl", { class: "kv" },
    h("dt", null, "Status"), h("dd", { id: "shipment-status" }, statusBadge(sh.status, sh.delayed)),
    h("dt", null, "ETA"), h("dd", null, time(sh.eta)),
    h("dt", null, "Promised"), h("dd", null, time(sh.promised_at)),
    h("dt", null, "Distance left"), h("dd", null, sh.distance_remaining_km === null ? "—" : `${fmtNumber(sh.distance_remaining_km)} km`),
    h("dt", null, "Route"), h("dd", null, `${sh.origin} → ${sh.destination} (${sh.customer})`),
    h("dt", null, "Vehicle"), h("dd", null, sh.vehicle),
    h("dt", null, "Temperature"), h("dd", null, sh.temperature
      ? `${fmtNumber(sh.temperature.min_c)} to ${fmtNumber(sh.temperature.max_c)} °C, MKT ${fmtNumber(sh.temperature.mkt_c)} °C, ${fmtNumber(sh.temperature.minutes_out_of_range)} min out of range`
      : "—"),
    h("dt", null, "Customer page"), h("dd", null, h("a", { href: `/track/${encodeURIComponent(sh.public_token)}` }, "public tracking link")));
  const events = h("ol", { class: "events", "aria-label": "Status timeline" },
    sh.events.length ? sh.events.map((e) => h("li", null, time(e.ts), h("strong", null, label(e.type)), e.detail ? ` — ${e.detail}` : ""))
      : h("li", { class: "muted" }, "No events yet."));
  root.append(h("section", { class: "panel", "aria-labelledby": "sh-summary" }, h("h2", { id: "sh-summary" }, "Status"),
    progress, h("div", { class: "grid-2" }, facts, h("div", null, h("h3", null, "Timeline"), events))));

  // Route: the vehicle's track and the origin/destination geofences; the chart: its sensor.
  const [track, destination, origin, devices, alarms] = await Promise.all([
    all(`/shipments/${encodeURIComponent(ref)}/track`),
    api(`/geofences/${encodeURIComponent(sh.destination)}`).catch(() => null),
    originFence(sh.origin).catch(() => null),
    all("/devices"),
    all("/alarms", { shipment: ref }),
  ]);
  const mapFigure = h("figure", { id: "route-map" },
    routeMap({
      positions: track.map((p) => ({ lat: p.lat, lon: p.lon, ts: p.ts })),
      fences: [origin ? { role: "origin", code: origin.code, fence: origin.fence } : null,
        destination ? { role: "destination", code: sh.destination, fence: destination } : null].filter(Boolean),
      title: `Route of shipment ${sh.ref}`,
    }),
    h("figcaption", null, `${track.length} positions`, track.length ? `, last at ${fmtTime(track[track.length - 1].ts)}` : "",
      h("ul", { class: "legend" }, h("li", null, h("span", { class: "swatch route" }), "route"),
        h("li", null, h("span", { class: "swatch origin" }), "origin geofence"),
        h("li", null, h("span", { class: "swatch destination" }), "destination geofence"))));

  const sensor = devices.find((d) => d.kind === "env_sensor" && d.vehicle === sh.vehicle);
  const chartFigure = h("figure", { id: "temperature-chart" });
  if (sensor) {
    const from = new Date(Math.min(new Date(sh.created_at), ...sh.events.map((e) => new Date(e.ts))));
    const done = sh.events.find((e) => e.type === "delivered");
    const to = done ? new Date(done.ts) : new Date();
    const series = await api(`/telemetry/${encodeURIComponent(sensor.device_id)}`, { params: { from: from.toISOString(), to: to.toISOString() } });
    const profile = sh.profile ? await api(`/profiles/${encodeURIComponent(sh.profile)}`).catch(() => null) : null;
    const excursions = alarms.filter((a) => TEMP_ALARMS.has(a.type)).map((a) => ({
      from: new Date(a.started_at), to: a.cleared_at ? new Date(a.cleared_at) : to,
      label: `${label(a.type)} from ${fmtTime(a.started_at)}${a.cleared_at ? " to " + fmtTime(a.cleared_at) : " (still active)"}`,
    }));
    chartFigure.append(
      temperatureChart({
        series: series.items.filter((b) => b.temp_c).map((b) => ({ t: new Date(b.bucket), ...b.temp_c })),
        band: profile ? { min: profile.temp_min_c, max: profile.temp_max_c } : null,
        excursions, range: { from, to }, title: `Temperature of shipment ${sh.ref} (sensor ${sensor.device_id})`,
      }),
      h("figcaption", null, `Sensor ${sensor.device_id}, ${series.bucket} averages with min–max envelope. `,
        excursions.length ? `${excursions.length} excursion${excursions.length === 1 ? "" : "s"}.` : "No excursion.",
        h("ul", { class: "legend" }, h("li", null, h("span", { class: "swatch temp" }), "temperature"),
          profile ? h("li", null, h("span", { class: "swatch band" }), `profile ${profile.code}: ${profile.temp_min_c}–${profile.temp_max_c} °C`) : null,
          h("li", null, h("span", { class: "swatch excursion" }), "excursion"))));
  } else {
    chartFigure.append(h("p", { class: "muted" }, `No temperature sensor rides on ${sh.vehicle}.`));
  }
  root.append(h("div", { class: "grid-2" },
    h("section", { class: "panel", "aria-labelledby": "map-h" }, h("h2", { id: "map-h" }, "Route"), mapFigure),
    h("section", { class: "panel", "aria-labelledby": "chart-h" }, h("h2", { id: "chart-h" }, "Temperature"), chartFigure)));
  if (sh.lines.length) {
    root.append(h("section", { class: "panel", "aria-labelledby": "lines-h" }, h("h2", { id: "lines-h" }, "Lines"),
      table({ columns: [{ title: "Item", cell: (l) => l.sku }, { title: "Quantity", num: true, cell: (l) => fmtNumber(l.qty, 3) }], rows: sh.lines })));
  }
  const reload = debounce(() => { if (document.body.dataset.view === "shipments") route(); }, 800);
  state.handlers = {
    shipment: (e) => { if (e.ref === ref) reload(); },
    shipment_event: (e) => { if (e.shipment === ref) { announce(`Shipment ${ref}: ${label(e.type)}`); reload(); } },
    alarm: (a) => { if (a.shipment === ref) reload(); },
  };
}

// --- alarms ----------------------------------------------------------------------------------

async function alarmsView(root) {
  root.append(h("h1", null, "Alarms"));
  const canAck = ACK_ROLES.has(state.me.role);
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter alarms" },
    h("div", null, h("label", { for: "al-state" }, "State"),
      h("select", { id: "al-state", name: "state" }, h("option", { value: "active" }, "Active"),
        h("option", { value: "cleared" }, "Cleared"), h("option", { value: "" }, "All"))),
    h("button", { type: "submit" }, "Apply"));
  const out = h("div");
  root.append(form, out);
  const rows = new Map();
  const columns = [
    { title: "Severity", cell: (a) => h("span", { class: `badge sev-${a.severity}` }, a.severity) },
    { title: "Alarm", cell: (a) => [h("strong", null, label(a.type)), h("br"), a.message] },
    { title: "Subject", cell: (a) => [a.device_id, a.shipment && `shipment ${a.shipment}`, a.location, a.sku].filter(Boolean).join(", ") || "—" },
    { title: "Started", cell: (a) => time(a.started_at) },
    { title: "State", cell: (a) => [label(a.state), a.cleared_at ? [" ", time(a.cleared_at)] : null] },
    { title: "Acknowledged", cell: (a) => ackCell(a) },
  ];

  function ackCell(a) {
    if (a.acknowledged) {
      return h("span", { class: "ack-done" }, `Yes, by ${a.ack_by ?? "?"}`, a.ack_note ? ` — “${a.ack_note}”` : "");
    }
    if (!canAck) return "No";
    const noteId = `ack-note-${a.id}`;
    const formEl = h("form", { class: "ack-form", hidden: true },
      h("div", { class: "field" }, h("label", { for: noteId }, "Note"),
        h("textarea", { id: noteId, name: "note", rows: 2, maxlength: 2000 })),
      h("button", { type: "submit" }, "Confirm acknowledgement"), " ",
      h("button", { type: "button", class: "secondary", onclick: () => { formEl.hidden = true; opener.hidden = false; opener.focus(); } }, "Cancel"));
    const opener = h("button", { type: "button", "aria-label": `Acknowledge alarm ${a.id}: ${label(a.type)}`,
      onclick: () => { opener.hidden = true; formEl.hidden = false; formEl.querySelector("textarea").focus(); } }, "Acknowledge");
    formEl.addEventListener("submit", async (e) => {
      e.preventDefault();
      const note = new FormData(formEl).get("note").trim();
      try {
        const updated = await api(`/alarms/${a.id}/ack`, { method: "POST", body: { note: note || null } });
        put(updated);
        announce(`Alarm ${a.id} acknowledged`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 401)) formEl.append(h("p", { class: "error", role: "alert" }, err.message));
      }
    });
    return h("div", null, opener, formEl);
  }

  function put(a) {
    const wanted = new FormData(form).get("state");
    const old = rows.get(a.id);
    if (wanted && a.state !== wanted) {
      if (old) old.remove();
      rows.delete(a.id);
      return;
    }
    const tr = tableRow(columns, a, () => ({ "data-id": a.id, "data-state": a.state, "data-ack": a.acknowledged ? "yes" : "no" }));
    if (old) {
      const focusInside = old.contains(document.activeElement);
      old.replaceWith(tr);
      if (focusInside) (tr.querySelector(".ack-done") || tr.querySelector("button") || tr).setAttribute("tabindex", "-1");
      if (focusInside) (tr.querySelector(".ack-done") || tr.querySelector("button") || tr).focus();
    } else {
      tr.classList.add("fresh");
      const body = out.querySelector("tbody");
      if (body) body.prepend(tr);
      else load();
    }
    rows.set(a.id, tr);
  }

  async function load() {
    const list = await all("/alarms", { state: new FormData(form).get("state") });
    rows.clear();
    const t = table({ caption: `${list.length} alarm${list.length === 1 ? "" : "s"}`, columns, rows: [] });
    for (const a of list) {
      const tr = tableRow(columns, a, () => ({ "data-id": a.id, "data-state": a.state, "data-ack": a.acknowledged ? "yes" : "no" }));
      rows.set(a.id, tr);
      t.querySelector("tbody").append(tr);
    }
    clear(out).append(list.length ? t : h("p", { class: "muted" }, "No alarms."));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(showError(out)); });
  await load();
  state.handlers = {
    alarm: (a) => {
      const isNew = !rows.has(a.id);
      put(a);
      if (isNew && a.state === "active") announce(`New ${a.severity} alarm: ${label(a.type)}`);
    },
  };
}

// --- devices ---------------------------------------------------------------------------------

async function devicesView(root) {
  root.append(h("h1", null, "Devices"));
  const out = h("div");
  root.append(out);
  const columns = [
    { title: "Device", cell: (d) => d.device_id },
    { title: "Kind", cell: (d) => label(d.kind) },
    { title: "Health", cell: (d) => h("span", { class: d.online ? "badge ok" : "badge warn" }, d.online ? "online" : "offline") },
    { title: "Last seen", cell: (d) => time(d.last_seen) },
    { title: "Battery", num: true, cell: (d) => (d.battery_pct === null ? "—" : `${fmtNumber(d.battery_pct, 0)} %`) },
    { title: "Where", cell: (d) => [d.site, d.location, d.vehicle && `on ${d.vehicle}`].filter(Boolean).join(", ") || "—" },
  ];
  async function load() {
    const list = await all("/devices");
    const offline = list.filter((d) => !d.online).length;
    clear(out).append(list.length
      ? table({ caption: `${list.length} devices, ${offline} offline`, columns, rows: list, rowAttrs: (d) => ({ "data-id": d.device_id }) })
      : h("p", { class: "muted" }, "No devices."));
  }
  await load();
  const reload = debounce(() => load().catch(() => {}), 500);
  // Going offline is silence, which no event reports: re-read every minute as well.
  const timer = setInterval(() => { if (document.body.dataset.view === "devices") reload(); else clearInterval(timer); }, 60000);
  state.handlers = { device: reload, alarm: (a) => { if (a.type === "device_offline") reload(); } };
}

// --- start -----------------------------------------------------------------------------------

whenUnauthorized(() => showSignIn("Your session has ended or the token is not valid; sign in again."));
window.addEventListener("hashchange", () => { if (location.hash !== "#main") route(); });
document.addEventListener("DOMContentLoaded", () => {
  $("skip").addEventListener("click", (e) => { e.preventDefault(); $("main").focus(); });
  $("sign-out").addEventListener("click", () => showSignIn("Signed out."));
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (!value) {
      $("sign-in-error").textContent = "Enter a token.";
      return;
    }
    try {
      await signIn(value);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) showSignIn(`Could not sign in: ${err.message}`);
    }
  });
  if (token()) signIn(token()).catch(() => {});
  else showSignIn();
});

// The public order page: no sign-in; the token in the address is the key. It shows only what
// GET /api/v1/track/order/{token} returns (the order's status, its shipments with ETA, updates).

import { clear, h, label, time } from "./dom.js";

const STEPS = ["allocated", "picking", "picked", "shipped", "delivered"];
const TEXT = { open: "Received", allocated: "Confirmed", backordered: "Waiting for stock", picking: "Being picked",
  partially_picked: "Partly picked", picked: "Packed", partially_shipped: "Partly on its way", shipped: "On its way",
  partially_delivered: "Partly delivered", delivered: "Delivered", cancelled: "Cancelled" };
const SHIPMENT = { planned: "Planned", loading: "Being loaded", in_transit: "On the way", arrived: "Arrived",
  delivered: "Delivered", cancelled: "Cancelled" };
const REFRESH_MS = 60000;

function render(root, t) {
  const base = t.status.replace(/^partially_/, "");
  const current = STEPS.indexOf(base === "backordered" ? "allocated" : base);
  const progress = h("ol", { class: "progress", "aria-label": "Progress" }, STEPS.map((st, i) =>
    h("li", { class: i < current ? "done" : i === current ? "current" : null, "aria-current": i === current ? "step" : null },
      TEXT[st])));
  const facts = h("dl", { class: "kv" }, h("dt", null, "Status"),
    h("dd", { class: "status", id: "track-status" }, TEXT[t.status] || label(t.status)));
  const shipments = h("ul", { class: "events", "aria-label": "Shipments" }, t.shipments.length
    ? t.shipments.map((s) => h("li", null, `${SHIPMENT[s.status] || label(s.status)}`,
      s.eta && s.status !== "delivered" ? [" · expected ", time(s.eta)] : null))
    : h("li", { class: "muted" }, "Not shipped yet."));
  const events = h("ol", { class: "events", "aria-label": "Updates" }, t.events.length
    ? t.events.slice().reverse().map((e) => h("li", null, time(e.ts), " ", TEXT[e.type] || label(e.type)))
    : h("li", { class: "muted" }, "No updates yet."));
  clear(root).append(h("section", { class: "panel" }, t.status === "cancelled" ? null : progress, facts),
    h("section", { class: "panel", "aria-labelledby": "shipments-h" }, h("h2", { id: "shipments-h" }, "Shipments"), shipments),
    h("section", { class: "panel", "aria-labelledby": "updates-h" }, h("h2", { id: "updates-h" }, "Updates"), events));
  root.setAttribute("aria-busy", "false");
  document.body.dataset.loaded = "track-order";
}

async function load() {
  const root = document.getElementById("tracking");
  const token = decodeURIComponent(location.pathname.replace(/^\/track\/order\//, ""));
  try {
    const res = await fetch(`/api/v1/track/order/${encodeURIComponent(token)}`, { headers: { Accept: "application/json" } });
    if (res.status === 404) {
      clear(root).append(h("p", { role: "alert" }, "We cannot find an order for this link. Please check the address."));
      document.body.dataset.loaded = "track-order";
      return;
    }
    if (!res.ok) throw new Error(res.statusText);
    render(root, await res.json());
  } catch {
    clear(root).append(h("p", { role: "alert" }, "Tracking is unavailable right now; this page will retry."));
  }
}

load();
setInterval(load, REFRESH_MS);

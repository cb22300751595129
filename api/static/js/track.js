// The public tracking page: no sign-in; the token in the address is the key. It shows only what
// GET /api/v1/track/{token} returns (status, ETA, events, progress) and refreshes every minute.

import { clear, h, label, time } from "./dom.js";
import { serviceSection } from "./track_service.js";

const STEPS = ["planned", "loading", "in_transit", "arrived", "delivered"];
const STEP_TEXT = { planned: "Planned", loading: "Being loaded", in_transit: "On the way", arrived: "Arrived", delivered: "Delivered", cancelled: "Cancelled" };
const REFRESH_MS = 60000;

function render(root, t) {
  const current = STEPS.indexOf(t.status);
  const progress = h("ol", { class: "progress", "aria-label": "Progress" }, STEPS.map((st, i) =>
    h("li", { class: i < current ? "done" : i === current ? "current" : null, "aria-current": i === current ? "step" : null }, STEP_TEXT[st])));
  const facts = h("dl", { class: "kv" },
    h("dt", null, "Status"), h("dd", { class: "status", id: "track-status" }, STEP_TEXT[t.status] || label(t.status)),
    t.delivered_at ? [h("dt", null, "Delivered"), h("dd", null, time(t.delivered_at))]
      : [h("dt", null, "Expected"), h("dd", { id: "track-eta" }, t.eta ? time(t.eta) : "not known yet")],
    t.progress_pct === null || t.progress_pct === undefined ? null
      : [h("dt", null, "Progress"), h("dd", null, h("progress", { max: 100, value: t.progress_pct, "aria-label": "Progress" }), ` ${t.progress_pct} %`)]);
  const events = h("ol", { class: "events", "aria-label": "Updates" },
    t.events.length ? t.events.slice().reverse().map((e) => h("li", null, time(e.ts), e.detail || label(e.type)))
      : h("li", { class: "muted" }, "No updates yet."));
  clear(root).append(h("section", { class: "panel" }, t.status === "cancelled" ? null : progress, facts),
    h("section", { class: "panel", "aria-labelledby": "updates-h" }, h("h2", { id: "updates-h" }, "Updates"), events));
  if (!document.getElementById("service")) root.after(serviceSection(tokenOfPage()));
  root.setAttribute("aria-busy", "false");
  document.body.dataset.loaded = "track";
}

function tokenOfPage() {
  return decodeURIComponent(location.pathname.replace(/^\/track\//, ""));
}

async function load() {
  const root = document.getElementById("tracking");
  const token = tokenOfPage();
  try {
    const res = await fetch(`/api/v1/track/${encodeURIComponent(token)}`, { headers: { Accept: "application/json" } });
    if (res.status === 404) {
      clear(root).append(h("p", { role: "alert" }, "We cannot find a shipment for this link. Please check the address."));
      document.body.dataset.loaded = "track";
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

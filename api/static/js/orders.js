// Orders and replenishment views (CONTRACT section 3): orders with their lines and tasks per
// scanner, one order in detail, and replenishment suggestions with the early-warning alarms.

import { all, api } from "./api.js";
import { fmtNumber, fmtTime, h, label, table, time } from "./dom.js";

const WARNINGS = new Set(["stock_low", "stock_out_risk", "lot_expiring", "receipt_exception"]);

function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, label(status));
}

function lineFigures(order) {
  const sum = (k) => order.lines.reduce((n, l) => n + l[k], 0);
  return `${fmtNumber(sum("picked"), 0)} / ${fmtNumber(sum("qty"), 0)} picked`;
}

export async function ordersView(root, ref) {
  if (ref) return orderDetail(root, ref);
  root.append(h("h1", null, "Orders"));
  const orders = await all("/orders");
  root.append(table({
    caption: `${orders.length} order${orders.length === 1 ? "" : "s"}`,
    columns: [
      { title: "Order", cell: (o) => h("a", { href: `#/orders/${encodeURIComponent(o.ref)}` }, o.ref) },
      { title: "Status", cell: (o) => statusBadge(o.status) },
      { title: "Customer", cell: (o) => o.customer },
      { title: "Priority", num: true, cell: (o) => String(o.priority) },
      { title: "Progress", cell: lineFigures },
      { title: "Backordered", num: true,
        cell: (o) => fmtNumber(o.lines.reduce((n, l) => n + l.backordered, 0), 0) },
    ],
    rows: orders,
  }));
  // Tasks per scanner: who has how much open work.
  const open = await all("/tasks", { status: "open" });
  const per = new Map();
  for (const t of open) per.set(t.device_id ?? "unassigned", (per.get(t.device_id ?? "unassigned") ?? 0) + 1);
  const rows = [...per.entries()].sort((a, b) => a[0].localeCompare(b[0]));
  root.append(h("h2", null, "Open tasks per scanner"), table({
    caption: `${open.length} open task${open.length === 1 ? "" : "s"}`,
    columns: [{ title: "Scanner", cell: (r) => r[0] }, { title: "Open tasks", num: true, cell: (r) => String(r[1]) }],
    rows,
  }));
}

async function orderDetail(root, ref) {
  const o = await api(`/orders/${encodeURIComponent(ref)}`);
  root.append(h("p", null, h("a", { href: "#/orders" }, "← All orders")),
    h("h1", null, `Order ${o.ref} `, statusBadge(o.status)),
    h("p", { class: "muted" }, `Customer ${o.customer} · site ${o.site} · priority ${o.priority} · requested `,
      time(o.requested_at)));
  root.append(h("h2", null, "Lines"), table({
    columns: [
      { title: "Line", num: true, cell: (l) => String(l.line_no) },
      { title: "Item", cell: (l) => l.sku },
      { title: "Lot", cell: (l) => l.lot ?? "any" },
      ...["qty", "allocated", "picked", "shipped", "delivered", "backordered"].map((k) => (
        { title: label(k === "qty" ? "ordered" : k), num: true, cell: (l) => fmtNumber(l[k], 0) })),
    ],
    rows: o.lines,
  }));
  root.append(h("h2", null, "Tasks"), table({
    columns: [
      { title: "Task", cell: (t) => t.task_id },
      { title: "Scanner", cell: (t) => t.device_id ?? "—" },
      { title: "Item / lot", cell: (t) => `${t.sku}${t.lot ? " / " + t.lot : ""}` },
      { title: "From → to", cell: (t) => `${t.from_location ?? "—"} → ${t.to_location ?? "—"}` },
      { title: "Done", num: true, cell: (t) => `${fmtNumber(t.done_qty, 0)} / ${fmtNumber(t.qty, 0)}` },
      { title: "Status", cell: (t) => statusBadge(t.status) },
      { title: "Refused scans", num: true, cell: (t) => String(t.scans.filter((s) => !s.ok).length) },
    ],
    rows: o.tasks,
  }));
  root.append(h("h2", null, "Events"), h("ol", { class: "events" },
    o.events.map((e) => h("li", null, h("span", { class: "muted" }, fmtTime(e.ts)), " ", label(e.type), " ", e.detail))));
}

export async function replenishmentView(root) {
  root.append(h("h1", null, "Replenishment"));
  const [rows, alarms] = await Promise.all([api("/replenishment"), all("/alarms", { state: "active" })]);
  const items = rows.items.slice().sort((a, b) => (b.suggested_qty - a.suggested_qty) || a.sku.localeCompare(b.sku));
  root.append(table({
    caption: `${items.filter((r) => r.suggested_qty > 0).length} item(s) to reorder`,
    columns: [
      { title: "Item", cell: (r) => r.sku },
      { title: "Site", cell: (r) => r.site },
      { title: "Available", num: true, cell: (r) => fmtNumber(r.available, 0) },
      { title: "Reorder point", num: true, cell: (r) => r.reorder_point == null ? "—" : fmtNumber(r.reorder_point, 0) },
      { title: "Suggested", num: true, cell: (r) => fmtNumber(r.suggested_qty, 0) },
      { title: "Per day", num: true, cell: (r) => fmtNumber(r.daily_rate, 1) },
      { title: "Days of cover", num: true, cell: (r) => r.days_of_cover == null ? "—" : fmtNumber(r.days_of_cover, 1) },
      { title: "Stock-out expected", cell: (r) => r.stockout_expected_at ? time(r.stockout_expected_at) : "—" },
    ],
    rows: items,
  }));
  const warnings = alarms.filter((a) => WARNINGS.has(a.type));
  root.append(h("h2", null, "Early warnings"), warnings.length ? table({
    columns: [
      { title: "Type", cell: (a) => label(a.type) },
      { title: "Severity", cell: (a) => a.severity },
      { title: "Since", cell: (a) => time(a.started_at) },
      { title: "Message", cell: (a) => a.message },
    ],
    rows: warnings,
  }) : h("p", { class: "muted" }, "No early warnings."));
}

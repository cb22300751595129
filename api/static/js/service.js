// The after-sales service page (#/service): the figures of GET /reports/service as cards and two
// SVG bar charts, a CSV export, and the open tickets with their assignee and SLA state.

import { api, token } from "./api.js";
import { clear, fmtNumber, h, label, s, table, time } from "./dom.js";

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${fmtNumber(seconds / 3600)} h`;
  return `${fmtNumber(seconds / 86400)} d`;
}

/** Horizontal bars: rows [{label, values: [n, ...]}], one colour class per series. */
function barChart({ id, title, series, rows, width = 560 }) {
  const bar = 14;
  const gap = 10;
  const left = 170;
  const height = Math.max(1, rows.length) * (bar * series.length + gap) + 30;
  const max = Math.max(1, ...rows.flatMap((r) => r.values));
  const scale = (width - left - 40) / max;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": `${id}-t` },
    s("title", { id: `${id}-t` }, title));
  rows.forEach((r, i) => {
    const y0 = 10 + i * (bar * series.length + gap);
    svg.append(s("text", { x: left - 8, y: y0 + bar, "text-anchor": "end", class: "axis" }, r.label));
    r.values.forEach((v, j) => {
      const y = y0 + j * bar;
      svg.append(s("rect", { x: left, y, width: Math.max(1, v * scale), height: bar - 2, class: `bar bar-${j}` },
        s("title", null, `${series[j]}: ${v}`)));
      svg.append(s("text", { x: left + v * scale + 4, y: y + bar - 3, class: "axis" }, String(v)));
    });
  });
  return h("figure", { id, class: "chart" }, svg,
    h("figcaption", null, title, " ", h("ul", { class: "legend" }, series.map((name, j) =>
      h("li", null, h("span", { class: `swatch bar-${j}` }), name)))));
}

async function downloadCsv(params) {
  const url = new URL("/api/v1/reports/service", location.origin);
  for (const [k, v] of Object.entries({ ...params, format: "csv" })) if (v) url.searchParams.set(k, v);
  const res = await fetch(url, { headers: { Authorization: `Bearer ${token()}` } });
  if (!res.ok) throw new Error(res.statusText);
  const link = h("a", { href: URL.createObjectURL(await res.blob()), download: "service-report.csv" });
  document.body.append(link);
  link.click();
  link.remove();
}

export async function serviceView(root) {
  root.append(h("h1", null, "After-sales service"));
  const site = h("input", { id: "svc-site", name: "site", placeholder: "all sites" });
  const form = h("form", { class: "filters", id: "svc-filters" },
    h("div", { class: "field" }, h("label", { for: "svc-site" }, "Site"), site),
    h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", id: "svc-csv", onclick: () => downloadCsv({ site: site.value }) }, "Export CSV"));
  const body = h("div", { id: "svc-body" });
  root.append(form, body);

  async function load() {
    const params = { site: site.value };
    const [r, open] = await Promise.all([api("/reports/service", { params }),
      api("/tickets", { params: { limit: 50 } })]);
    const card = (title, id, value, note) => h("section", { class: "card", "aria-labelledby": id },
      h("h2", { id }, title), h("p", { class: "big" }, value), note ? h("p", { class: "muted" }, note) : null);
    const opened = Object.values(r.opened_by_type).reduce((a, b) => a + b, 0);
    const types = Object.keys(r.opened_by_type);
    clear(body).append(
      h("div", { class: "cards" },
        card("Tickets", "svc-tickets", opened, `${r.backlog} open, oldest ${duration(r.backlog_oldest_age_s)}`),
        card("SLA met", "svc-sla", r.sla_met_pct === null ? "—" : `${fmtNumber(r.sla_met_pct)} %`),
        card("First response", "svc-first", duration(r.median_first_response_s), "median"),
        card("Resolution", "svc-resolution", duration(r.median_resolution_s), "median"),
        card("Feedback", "svc-feedback", r.mean_feedback === null ? "—" : `${fmtNumber(r.mean_feedback)} / 5`,
          `${r.feedback_count} answers`)),
      h("section", { class: "panel", "aria-labelledby": "svc-charts-h" }, h("h2", { id: "svc-charts-h" }, "Charts"),
        barChart({ id: "svc-by-type", title: "Tickets by type", series: ["opened", "resolved"],
          rows: types.map((t) => ({ label: label(t), values: [r.opened_by_type[t], r.resolved_by_type[t] || 0] })) }),
        barChart({ id: "svc-returns", title: "Returns by item and reason", series: ["quantity"],
          rows: r.returns.map((x) => ({ label: `${x.sku} · ${x.reason}`, values: [x.qty] })) })),
      h("section", { class: "panel", id: "svc-open" },
        table({ caption: "Tickets (newest first)", rows: open.items.filter((t) => !["resolved", "closed"].includes(t.status)),
          columns: [
            { title: "Ticket", cell: (t) => `#${t.id} ${label(t.type)}` },
            { title: "Summary", cell: (t) => t.summary },
            { title: "Status", cell: (t) => label(t.status) },
            { title: "Priority", cell: (t) => t.priority, num: true },
            { title: "Assignee", cell: (t) => t.escalated_to ? `${t.assignee || "—"} → ${t.escalated_to}` : t.assignee || "—" },
            { title: "Resolution due", cell: (t) => time(t.resolution_due) },
            { title: "SLA", cell: (t) => h("span", { class: t.sla_breached ? "badge sev-critical" : "badge ok" },
              t.sla_breached ? "breached" : "on time") },
          ] })));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  await load();
}

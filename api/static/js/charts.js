// The route map and the temperature chart, drawn as SVG in the browser: no tile server, no chart
// library, so both work offline.

import { fmtClock, s } from "./dom.js";

const M_PER_DEG = 111320;

// --- route map ---------------------------------------------------------------------------------

function fenceOutline(fence) {
  if (fence.type === "polygon") return fence.coordinates.map(([lon, lat]) => ({ lat, lon }));
  // A circle as a 48-gon, so that it goes through the same projection as everything else.
  const points = [];
  for (let i = 0; i < 48; i++) {
    const a = (i / 48) * 2 * Math.PI;
    const dLat = (fence.radius_m * Math.sin(a)) / M_PER_DEG;
    const dLon = (fence.radius_m * Math.cos(a)) / (M_PER_DEG * Math.cos((fence.lat * Math.PI) / 180));
    points.push({ lat: fence.lat + dLat, lon: fence.lon + dLon });
  }
  return points;
}

/**
 * positions: [{lat, lon, ts}], fences: [{role: "origin"|"destination", code, fence}].
 * Equirectangular projection (x scaled by cos of the mean latitude), fitted to the bounding box.
 */
export function routeMap({ positions, fences, title, width = 640, height = 380 }) {
  const outlines = fences.filter((f) => f.fence).map((f) => ({ ...f, points: fenceOutline(f.fence) }));
  const all = [...positions, ...outlines.flatMap((o) => o.points)];
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "map-title map-desc" },
    s("title", { id: "map-title" }, title),
    s("desc", { id: "map-desc" }, `${positions.length} positions; ` +
      outlines.map((o) => `${o.role} geofence ${o.code}`).join(", ")),
    s("rect", { class: "map-bg", x: 0, y: 0, width, height }));
  if (all.length === 0) {
    svg.append(s("text", { class: "map-label", x: width / 2, y: height / 2, "text-anchor": "middle" }, "No position yet"));
    return svg;
  }
  const meanLat = all.reduce((sum, p) => sum + p.lat, 0) / all.length;
  const kx = Math.cos((meanLat * Math.PI) / 180);
  const xs = all.map((p) => p.lon * kx);
  const ys = all.map((p) => p.lat);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const minSpan = 0.005; // about 500 m: one point alone still gets a sensible zoom
  if (x1 - x0 < minSpan) [x0, x1] = [(x0 + x1) / 2 - minSpan / 2, (x0 + x1) / 2 + minSpan / 2];
  if (y1 - y0 < minSpan) [y0, y1] = [(y0 + y1) / 2 - minSpan / 2, (y0 + y1) / 2 + minSpan / 2];
  const pad = 28;
  const scale = Math.min((width - 2 * pad) / (x1 - x0), (height - 2 * pad) / (y1 - y0));
  const ox = (width - scale * (x1 - x0)) / 2;
  const oy = (height - scale * (y1 - y0)) / 2;
  const project = (p) => [ox + (p.lon * kx - x0) * scale, height - (oy + (p.lat - y0) * scale)];
  const pts = (list) => list.map((p) => project(p).map((v) => v.toFixed(1)).join(",")).join(" ");

  // A light grid every "round" number of kilometres gives a sense of distance without tiles.
  const kmPerPx = (M_PER_DEG / 1000) / scale;
  const stepKm = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500].find((k) => k / kmPerPx >= 60) ?? 1000;
  const stepPx = stepKm / kmPerPx;
  for (let x = stepPx; x < width; x += stepPx) svg.append(s("line", { class: "grid-line", x1: x, y1: 0, x2: x, y2: height }));
  for (let y = stepPx; y < height; y += stepPx) svg.append(s("line", { class: "grid-line", x1: 0, y1: y, x2: width, y2: y }));

  for (const o of outlines) {
    svg.append(s("polygon", { class: `fence-${o.role}`, points: pts(o.points) },
      s("title", null, `${o.role} geofence ${o.code}`)));
    const [cx, cy] = project({
      lat: o.points.reduce((a, p) => a + p.lat, 0) / o.points.length,
      lon: o.points.reduce((a, p) => a + p.lon, 0) / o.points.length,
    });
    // Labels near an edge grow inwards, so that they are not cut off.
    const anchor = cx > width * 0.7 ? "end" : cx < width * 0.3 ? "start" : "middle";
    const ly = cy < height * 0.2 ? cy + 28 : cy - 16;
    svg.append(s("text", { class: "map-label", x: Math.min(Math.max(cx, 8), width - 8), y: ly, "text-anchor": anchor },
      `${o.role}: ${o.code}`));
  }
  if (positions.length) {
    svg.append(s("polyline", { class: "route-line", points: pts(positions), "data-points": positions.length }));
    const [sx, sy] = project(positions[0]);
    svg.append(s("circle", { class: "route-start", cx: sx, cy: sy, r: 5 }, s("title", null, "first position")));
    const last = positions[positions.length - 1];
    const [lx, ly] = project(last);
    svg.append(s("circle", { class: "route-now", cx: lx, cy: ly, r: 7 },
      s("title", null, `last position ${last.lat.toFixed(5)}, ${last.lon.toFixed(5)}`)));
  }
  // Scale bar, bottom left.
  svg.append(s("line", { class: "axis", x1: 12, y1: height - 12, x2: 12 + stepPx, y2: height - 12 }),
    s("text", { class: "tick", x: 12, y: height - 18 }, `${stepKm} km`));
  return svg;
}

// --- temperature chart -------------------------------------------------------------------------

function niceStep(span, target) {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw) ?? 10 * mag;
}

/**
 * series: [{t: Date, avg, min, max}] (from /telemetry buckets), band: {min, max} | null,
 * excursions: [{from: Date, to: Date, label}], range: {from: Date, to: Date}.
 */
export function temperatureChart({ series, band, excursions, range, title, width = 640, height = 300 }) {
  const m = { left: 44, right: 12, top: 12, bottom: 28 };
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title chart-desc" },
    s("title", { id: "chart-title" }, title),
    s("desc", { id: "chart-desc" }, chartSummary(series, band, excursions)),
    s("rect", { class: "chart-bg", x: 0, y: 0, width, height }));
  const values = series.flatMap((p) => [p.min, p.max]).filter((v) => v !== null && v !== undefined);
  if (band) values.push(band.min, band.max);
  if (values.length === 0) values.push(0, 10);
  let [lo, hi] = [Math.min(...values), Math.max(...values)];
  const padV = Math.max(1, (hi - lo) * 0.1);
  [lo, hi] = [lo - padV, hi + padV];
  const t0 = range.from.getTime();
  const t1 = Math.max(range.to.getTime(), t0 + 60000);
  const X = (t) => m.left + ((t - t0) / (t1 - t0)) * (width - m.left - m.right);
  const Y = (v) => height - m.bottom - ((v - lo) / (hi - lo)) * (height - m.top - m.bottom);
  const plotW = width - m.left - m.right;

  if (band) {
    svg.append(s("rect", { class: "band", x: m.left, width: plotW, y: Y(band.max), height: Math.max(0, Y(band.min) - Y(band.max)) },
      s("title", null, `allowed ${band.min} to ${band.max} °C`)));
  }
  for (const ex of excursions) {
    const a = Math.max(X(ex.from.getTime()), m.left);
    const b = Math.min(X(ex.to.getTime()), width - m.right);
    if (b <= a) continue;
    svg.append(s("rect", { class: "excursion", x: a, width: Math.max(2, b - a), y: m.top, height: height - m.top - m.bottom },
      s("title", null, ex.label)));
  }
  // y axis ticks
  const step = niceStep(hi - lo, 5);
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
    svg.append(s("line", { class: "grid-line", x1: m.left, x2: width - m.right, y1: Y(v), y2: Y(v) }),
      s("text", { class: "tick", x: m.left - 6, y: Y(v) + 4, "text-anchor": "end" }, `${+v.toFixed(1)}°`));
  }
  // x axis ticks: about five, on whole minutes
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    svg.append(s("text", { class: "tick", x: X(t), y: height - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
      fmtClock(new Date(t))));
  }
  svg.append(s("line", { class: "axis", x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom }),
    s("line", { class: "axis", x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom }));

  const pts = series.filter((p) => p.avg !== null && p.avg !== undefined);
  if (pts.length) {
    const upper = pts.map((p) => `${X(p.t.getTime()).toFixed(1)},${Y(p.max).toFixed(1)}`);
    const lower = pts.slice().reverse().map((p) => `${X(p.t.getTime()).toFixed(1)},${Y(p.min).toFixed(1)}`);
    svg.append(s("polygon", { class: "envelope", points: [...upper, ...lower].join(" ") }),
      s("polyline", { class: "temp-line", "data-points": pts.length,
        points: pts.map((p) => `${X(p.t.getTime()).toFixed(1)},${Y(p.avg).toFixed(1)}`).join(" ") }));
  } else {
    svg.append(s("text", { class: "tick", x: width / 2, y: height / 2, "text-anchor": "middle" }, "No readings in this period"));
  }
  return svg;
}

function chartSummary(series, band, excursions) {
  const vals = series.flatMap((p) => [p.min, p.max]).filter((v) => v !== null && v !== undefined);
  const parts = [vals.length ? `Temperature from ${Math.min(...vals).toFixed(1)} to ${Math.max(...vals).toFixed(1)} °C` : "No readings"];
  if (band) parts.push(`allowed band ${band.min} to ${band.max} °C`);
  parts.push(`${excursions.length} excursion${excursions.length === 1 ? "" : "s"}`);
  return parts.join("; ") + ".";
}

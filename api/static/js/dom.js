// Small DOM helpers. Everything from the API goes in as text nodes or attributes, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** h("p", {class: "x"}, "text", otherNode) */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export function fmtTime(iso) {
  if (!iso) return "—";
  return dateTime.format(new Date(iso));
}

export function fmtClock(date) {
  return timeOnly.format(date);
}

/** A <time> element with a machine-readable value. */
export function time(iso) {
  return iso ? h("time", { datetime: iso }, fmtTime(iso)) : "—";
}

export function fmtNumber(n, digits = 1) {
  if (n === null || n === undefined) return "—";
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

export function label(text) {
  return text ? String(text).replaceAll("_", " ") : "—";
}

/** A responsive table: each cell carries its column name for the stacked phone layout. */
export function table({ caption, columns, rows, rowAttrs }) {
  const head = h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.title))));
  const body = h("tbody");
  for (const row of rows) body.append(tableRow(columns, row, rowAttrs));
  return h("table", { class: "responsive" }, caption ? h("caption", null, caption) : null, head, body);
}

export function tableRow(columns, row, rowAttrs) {
  return h("tr", rowAttrs ? rowAttrs(row) : null,
    // One wrapper per cell: on a phone the cell is a two-column grid (label, value).
    columns.map((c) => h("td", { "data-label": c.title, class: c.num ? "num" : null }, h("span", null, c.cell(row)))));
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

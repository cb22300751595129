// The customer's side of after-sales on the public tracking page: report a problem, see the
// shipment's tickets (status only) and rate a resolved one, once. No account: the token is the key.

import { clear, h, label, time } from "./dom.js";

async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(data?.error?.message || res.statusText);
  return data;
}

export function serviceSection(token) {
  const base = `/api/v1/track/${encodeURIComponent(token)}`;
  const list = h("div", { id: "my-tickets" });
  const message = h("p", { id: "issue-message", role: "status" });
  const summary = h("textarea", { id: "issue-summary", name: "summary", required: true, rows: 3, maxlength: 2000 });
  const contact = h("input", { id: "issue-contact", name: "contact", type: "email", required: true, autocomplete: "email" });
  const form = h("form", { id: "issue-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "issue-summary" }, "What went wrong?"), summary),
    h("div", { class: "field" }, h("label", { for: "issue-contact" }, "Your email"), contact),
    h("button", { type: "submit" }, "Report a problem"), message);

  function feedbackForm(t) {
    const score = h("select", { id: `score-${t.id}`, name: "score" }, [5, 4, 3, 2, 1].map((n) => h("option", { value: n }, `${n} / 5`)));
    const comment = h("input", { id: `comment-${t.id}`, name: "comment", maxlength: 2000 });
    const f = h("form", { class: "feedback", "aria-label": `Rate ticket ${t.id}` },
      h("label", { for: `score-${t.id}` }, "Your rating"), score,
      h("label", { for: `comment-${t.id}` }, "Comment"), comment, h("button", { type: "submit" }, "Send rating"));
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await post(`${base}/feedback`, { ticket: t.id, score: Number(score.value), comment: comment.value || null });
        message.textContent = "Thank you for your rating.";
        await load();
      } catch (err) { message.textContent = err.message; }
    });
    return f;
  }

  async function load() {
    const res = await fetch(`${base}/tickets`, { headers: { Accept: "application/json" } });
    if (!res.ok) return;
    const tickets = await res.json();
    clear(list).append(tickets.length ? h("ul", { class: "events", "aria-label": "Your requests" }, tickets.map((t) =>
      h("li", { "data-ticket": t.id }, time(t.opened_at), ` ${t.summary} — `, h("strong", null, label(t.status)),
        ["resolved", "closed"].includes(t.status) && !t.feedback_given ? feedbackForm(t) : null,
        t.feedback_given ? h("span", { class: "muted" }, " (rated, thank you)") : null)))
      : h("p", { class: "muted" }, "No requests for this shipment."));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!summary.value.trim() || !contact.value.includes("@")) {
      message.textContent = "Please describe the problem and give an email address.";
      return;
    }
    try {
      await post(`${base}/issues`, { summary: summary.value, contact: contact.value });
      summary.value = "";
      message.textContent = "Thank you: we have your report and will get back to you.";
      await load();
    } catch (err) { message.textContent = err.message; }
  });
  load();
  return h("section", { class: "panel", "aria-labelledby": "service-h", id: "service" },
    h("h2", { id: "service-h" }, "Problem with this delivery?"), list, form);
}

/* The history page: filtered, paged list of past studies; open, re-download the report, delete (admin). */
"use strict";
(function () {
  const { api, el, when } = cadx;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#studies tbody");
  const statusLine = document.getElementById("status");
  const prev = document.getElementById("prev");
  const next = document.getElementById("next");
  const pageInfo = document.getElementById("page-info");
  const isAdmin = document.body.dataset.role === "admin";
  const pageSize = 20;
  let page = 1;

  function row(s) {
    const actions = el("td", { class: "row-actions" },
      el("a", { href: "/studies/" + s.id }, "Open"), " ",
      el("a", { href: s.report_url, download: "" }, "Report"));
    if (isAdmin) {
      actions.append(" ", el("button", { type: "button", class: "linkish danger", onclick: async () => {
        if (!confirm("Delete study " + s.id + " and its images?")) return;
        try { await api("/api/v1/studies/" + s.id, { method: "DELETE" }); load(); }
        catch (err) { statusLine.textContent = "Delete failed: " + err.message; }
      } }, "Delete"));
    }
    return el("tr", {},
      el("td", {}, el("a", { href: "/studies/" + s.id, text: "#" + s.id })),
      el("td", { text: when(s.created_at) }),
      el("td", { text: s.patient_id || "–" }),
      el("td", { text: s.model_title }),
      el("td", { text: s.n_images + (s.n_errors ? " (" + s.n_errors + " refused)" : "") }),
      el("td", { text: s.findings.join(", ") || "–" }),
      el("td", { text: s.created_by || "–" }),
      actions);
  }

  async function load() {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (String(v).trim()) params.set(k, String(v).trim());
    params.set("page", page);
    params.set("page_size", pageSize);
    statusLine.textContent = "Loading…";
    try {
      const data = await api("/api/v1/studies?" + params);
      tbody.replaceChildren(...data.items.map(row));
      const pages = Math.max(1, Math.ceil(data.total / pageSize));
      pageInfo.textContent = "page " + page + " of " + pages + " · " + data.total + " studies";
      prev.disabled = page <= 1;
      next.disabled = page >= pages;
      statusLine.textContent = data.total ? "" : "No studies match.";
    } catch (err) {
      statusLine.textContent = "Could not load the studies: " + err.message;
    }
  }

  async function loadModels() {
    try {
      const data = await api("/api/v1/models");
      const select = document.getElementById("filter-model");
      const classes = new Set();
      for (const cat of data.categories) {
        for (const m of cat.models) {
          select.append(el("option", { value: m.id, text: m.title + " (" + cat.name + ")" }));
          m.classes.forEach((c) => classes.add(c));
        }
      }
      document.getElementById("class-names").replaceChildren(...[...classes].map((c) => el("option", { value: c })));
    } catch (err) { /* filters still work by typing */ }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); page = 1; load(); });
  form.addEventListener("reset", () => { page = 1; setTimeout(load, 0); });
  prev.addEventListener("click", () => { page -= 1; load(); });
  next.addEventListener("click", () => { page += 1; load(); });
  loadModels();
  load();
})();

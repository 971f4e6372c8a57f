/* Shared by every page: API calls (cookie + CSRF header) and the result cards.
   Text from users or files is only ever set with textContent, never parsed as HTML. */
"use strict";
window.cadx = (function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = csrf();
    const response = await fetch(path, opts);
    if (response.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return response.status === 204 ? null : response.json();
  }

  const pct = (p) => (100 * p).toFixed(1) + " %";
  const when = (iso) => new Date(iso).toLocaleString();

  function bars(result) {
    const entries = Object.entries(result.probabilities || {}).sort((a, b) => b[1] - a[1]);
    return el("div", { class: "bars" }, entries.map(([name, p]) =>
      el("div", { class: "bar-row" + ((result.decision_classes || []).includes(name) ? " top" : "") },
        el("span", { class: "bar-label", text: name }),
        el("span", { class: "bar" }, el("span", { class: "bar-fill", style: { width: (100 * p).toFixed(1) + "%" } })),
        el("span", { class: "bar-value", text: pct(p) }))));
  }

  // Every card names the model that produced (or declined to produce) its result.
  const modelLine = (study) => el("p", { class: "model-name muted small",
    text: "Model: " + study.model_title + (study.model_version ? " · " + study.model_version : "") });
  const sizeLine = (result) => el("p", { class: "muted small", text: result.width + "×" + result.height + " "
    + (result.kind || "").toUpperCase() + " · " + (result.seconds || 0).toFixed(2) + " s" });

  // "0.602 (balanced operating point)": which named point decided; a custom threshold shows the number alone.
  const thresholdLabel = (study) => study.threshold.toFixed(3)
    + (study.operating_point ? " (" + study.operating_point + " operating point)" : "");

  function actions(result, reportUrl) {
    return el("div", { class: "card-actions" },
      el("a", { class: "button secondary export", href: reportUrl, download: "" }, "Export report (PDF)"),
      el("a", { class: "linkish", href: result.original_url, download: result.filename }, "Original file"));
  }

  // The model could not judge this image (quality, scope, out of distribution): no finding, no heatmap; the
  // probabilities stay out of sight unless opened, and say that they are unreliable.
  function notAssessedCard(study, result, reportUrl) {
    return el("article", { class: "card not-assessed", "data-filename": result.filename },
      el("div", { class: "card-head" },
        el("img", { class: "thumb", src: result.thumbnail_url, alt: "", width: 96, height: 96 }),
        el("div", {},
          el("h3", { class: "filename", text: result.filename }),
          el("p", { class: "not-assessed-reason", role: "alert" },
            el("strong", { text: "Not assessed" }), " — " + (result.reason || "no reason recorded")),
          modelLine(study),
          sizeLine(result))),
      result.probabilities ? el("details", { class: "unreliable" },
        el("summary", { text: "Class probabilities (unreliable: not assessed)" }), bars(result)) : null,
      actions(result, reportUrl));
  }

  function resultCard(study, result) {
    const reportUrl = study.report_url + "?image=" + result.index;
    if (result.error) {
      return el("article", { class: "card failed", "data-filename": result.filename },
        el("h3", { class: "filename", text: result.filename }),
        el("p", { class: "error", text: "Not analysed: " + result.error }),
        modelLine(study));
    }
    if (result.assessed === false) return notAssessedCard(study, result, reportUrl);
    const method = result.explanation || "Grad-CAM"; // what drew the heatmap (older studies: Grad-CAM)
    // The headline is the finding asserted at the study's threshold, never the bare argmax: with a threshold chosen
    // on validation the two can differ, and the larger type must not say the opposite of the decision.
    const decided = result.decision_classes || [];
    const headline = decided.length === 1
      ? [el("span", { class: "class-name", text: decided[0] }), " ",
         el("span", { class: "prob", text: pct(result.probabilities[decided[0]]) })]
      : [el("span", { class: "class-name", text: decided.length ? decided.join(", ") : "no finding" })];
    const decision = el("p", { class: "decision" }, "Decision at threshold " + thresholdLabel(study),
      decided.includes(result.predicted_class) ? null
        : el("span", { class: "differs", text: "; the most probable class, " + result.predicted_class + " ("
          + pct(result.probability) + "), is not asserted at this threshold" }));
    return el("article", { class: "card", "data-filename": result.filename },
      el("div", { class: "card-head" },
        el("img", { class: "thumb", src: result.thumbnail_url, alt: "", width: 96, height: 96 }),
        el("div", {},
          el("h3", { class: "filename", text: result.filename }),
          el("p", { class: "prediction" }, headline),
          decision,
          result.uncertain ? el("p", { class: "uncertain", role: "status" },
            el("strong", { text: "Uncertain — review" }), " — " + (result.uncertain_reason || "no reason recorded"))
            : null,
          // studies stored before "not assessed" existed carry a scope warning instead
          result.warning ? el("p", { class: "warning", role: "alert", text: "Caution: " + result.warning }) : null,
          modelLine(study),
          sizeLine(result))),
      bars(result),
      result.heatmap_url ? el("figure", { class: "overlay" },
        el("img", { src: result.heatmap_url, alt: "Heatmap (" + method + ") of " + result.filename }),
        el("figcaption", { text: method + " for “" + (result.explained_class || result.predicted_class) + "”" }))
        : null,
      result.feature_maps_url ? el("details", { class: "features" }, el("summary", { text: "Feature maps" }),
        el("img", { src: result.feature_maps_url, alt: "Feature maps", loading: "lazy" })) : null,
      actions(result, reportUrl));
  }

  function studyHeader(study) {
    const bits = ["Study " + study.id, when(study.created_at), study.model_title + " (" + study.model_category + ")",
      "threshold " + thresholdLabel(study)];
    if (study.patient_id) bits.splice(1, 0, "patient " + study.patient_id);
    return el("div", { class: "study-head" },
      el("div", {}, el("h2", { text: bits.join(" · ") }),
        study.note ? el("p", { class: "muted", text: study.note }) : null),
      el("a", { class: "button secondary", href: study.report_url, download: "" }, "Study report (PDF)"));
  }

  function renderStudy(study, container) {
    container.replaceChildren(studyHeader(study),
      el("div", { class: "cards" }, study.results.map((r) => resultCard(study, r))));
  }

  return { api, el, csrf, pct, when, renderStudy };
})();

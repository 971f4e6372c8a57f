/* The recognise page: drop or pick files, choose a model, upload with per-file progress, show the cards.
   The model is never chosen silently: the last one this browser used (localStorage), the only one installed, or
   none, and then "Recognise" stays disabled with a hint until the user picks one. */
"use strict";
(function () {
  const { api, el, pct } = cadx;
  const form = document.getElementById("study-form");
  const drop = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const list = document.getElementById("file-list");
  const select = document.getElementById("model-select");
  const threshold = document.getElementById("threshold");
  const pointSelect = document.getElementById("operating-point");
  const pointLabel = document.getElementById("operating-point-label");
  const CUSTOM = ""; // the operating-point option for a threshold typed by the user
  const info = document.getElementById("model-info");
  const button = document.getElementById("recognise");
  const statusLine = document.getElementById("status");
  const results = document.getElementById("results");
  const hint = document.getElementById("model-hint");
  const REMEMBER = "cadx.model"; // localStorage key: the model this browser used last
  const maxBytes = parseFloat(document.body.dataset.maxUploadMb) * 1024 * 1024;
  const models = new Map();
  let files = []; // {file, row, bar, state}
  let busy = false;

  function refreshButton() {
    button.disabled = busy || !files.length || !select.value;
    hint.hidden = Boolean(select.value) || !models.size;
  }

  function remembered() {
    try { return window.localStorage.getItem(REMEMBER); } catch (e) { return null; } // storage may be blocked
  }

  function remember(id) {
    try { if (id) window.localStorage.setItem(REMEMBER, id); } catch (e) { /* not remembered, still works */ }
  }

  function setFileState(item, text, fraction, kind) {
    item.state.textContent = text;
    item.row.className = "file " + (kind || "");
    if (fraction !== null) item.bar.style.width = (100 * fraction).toFixed(0) + "%";
  }

  function addFiles(fileList) {
    if (busy) return;
    for (const file of fileList) {
      const bar = el("span", { class: "progress-fill" });
      const state = el("span", { class: "file-state", text: (file.size / 1048576).toFixed(2) + " MB" });
      const item = { file, bar, state };
      const remove = el("button", { type: "button", class: "linkish", "aria-label": "Remove " + file.name,
        onclick: () => { files = files.filter((f) => f !== item); item.row.remove(); refreshButton(); } }, "remove");
      item.row = el("li", { class: "file" }, el("span", { class: "file-name", text: file.name }),
        el("span", { class: "progress" }, bar), state, remove);
      if (file.size > maxBytes) setFileState(item, "over the size limit", 0, "warn");
      files.push(item);
      list.append(item.row);
    }
    refreshButton();
  }

  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => addFiles(e.dataTransfer.files));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });

  // A binary model's named operating points (chosen on validation) are offered by name with their validation
  // sensitivity and specificity; typing another threshold makes it a custom one.
  function showPoints(m) {
    const points = (m && m.operating_points) || [];
    pointLabel.hidden = points.length === 0;
    pointSelect.replaceChildren(...points.map((p) => el("option", { value: p.name,
      text: p.name + (typeof p.sensitivity === "number" && typeof p.specificity === "number"
        ? " (validation sensitivity " + pct(p.sensitivity) + ", specificity " + pct(p.specificity) + ")" : "") })),
      el("option", { value: CUSTOM, text: "custom threshold" }));
    const chosen = points.find((p) => p.default) || points[0];
    pointSelect.value = chosen ? chosen.name : CUSTOM;
  }

  function pointThreshold() {
    const m = models.get(select.value);
    const p = ((m && m.operating_points) || []).find((x) => x.name === pointSelect.value);
    return p ? p.threshold : null;
  }

  pointSelect.addEventListener("change", () => {
    const t = pointThreshold();
    if (t !== null) { threshold.value = t.toFixed(3); threshold.dataset.modelValue = threshold.value; }
  });
  threshold.addEventListener("input", () => {
    if (!pointLabel.hidden && threshold.value !== threshold.dataset.modelValue) pointSelect.value = CUSTOM;
  });

  function showModel() {
    const m = models.get(select.value);
    info.replaceChildren();
    showPoints(m);
    if (!m) {
      threshold.value = "";
      threshold.dataset.modelValue = "";
      return;
    }
    const pointT = pointThreshold();
    threshold.value = (pointT !== null ? pointT : m.decision_threshold).toFixed(3);
    threshold.dataset.modelValue = threshold.value; // left as shown: the server uses the model's exact value
    const facts = [m.architecture, m.input_size + " px", m.classes.length + " classes: " + m.classes.join(", "),
      "version " + m.version];
    info.append(el("p", { text: facts.join(" · ") }));
    const t = m.metrics;
    if (t) {
      const parts = [["AUC", t.auc], ["accuracy", t.accuracy], ["sensitivity", t.recall],
        ["specificity", t.specificity]].filter(([, v]) => typeof v === "number").map(([k, v]) => k + " " + v.toFixed(3));
      info.append(el("p", { class: "muted", text: "Test metrics (" + (t.split || "test") + ", n=" + t.n_images + "): "
        + parts.join(", ") }));
    } else {
      info.append(el("p", { class: "muted", text: "No evaluation metrics shipped with this model." }));
    }
  }

  async function loadModels() {
    try {
      const data = await api("/api/v1/models");
      select.replaceChildren(el("option", { value: "", text: "Choose a model…" }));
      for (const cat of data.categories) {
        const group = el("optgroup", { label: cat.name });
        for (const m of cat.models) {
          models.set(m.id, m);
          group.append(el("option", { value: m.id, text: m.title }));
        }
        select.append(group);
      }
      if (!models.size) statusLine.textContent = "No models installed on the server.";
      const last = remembered();
      if (last && models.has(last)) select.value = last;
      else if (models.size === 1) select.value = models.keys().next().value; // nothing to choose between
      else select.value = "";
      showModel();
    } catch (err) {
      statusLine.textContent = "Could not load the models: " + err.message;
    }
    refreshButton();
  }
  select.addEventListener("change", () => { remember(select.value); showModel(); refreshButton(); });

  function setBusy(on) {
    busy = on;
    button.querySelector(".spinner").hidden = !on;
    button.querySelector(".label").textContent = on ? "Recognising…" : "Recognise";
    refreshButton();
  }

  // One Idempotency-Key per request content: a resend of the same files and fields after a lost answer (network
  // error) carries the same key, so the server returns the study it made instead of storing a copy. Any answer
  // from the server, or any change to what is sent, starts a new key.
  let batchKey = null, batchFingerprint = null;
  function keyFor(fingerprint) {
    if (batchKey === null || fingerprint !== batchFingerprint) {
      const bytes = crypto.getRandomValues(new Uint8Array(16)); // also on plain http, unlike crypto.randomUUID
      batchKey = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      batchFingerprint = fingerprint;
    }
    return batchKey;
  }

  function upload(body, key, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/studies");
      xhr.setRequestHeader("X-CSRF-Token", cadx.csrf());
      // The same key for a resend of the same files: a retry after a lost answer returns the study made, no copy.
      xhr.setRequestHeader("Idempotency-Key", key);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total);
      xhr.upload.onload = () => onProgress(null, null);
      xhr.onload = () => resolve({ status: xhr.status, body: xhr.response || {} });
      xhr.onerror = () => reject(new Error("network error"));
      xhr.send(body);
    });
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (button.disabled) return;
    const t = parseFloat(threshold.value);
    if (threshold.value !== "" && !(t >= 0 && t <= 1)) { statusLine.textContent = "The threshold must be between 0 and 1."; return; }
    const body = new FormData();
    files.forEach((f) => body.append("files", f.file, f.file.name));
    body.append("model_id", select.value);
    if (!pointLabel.hidden && pointSelect.value !== CUSTOM) body.append("operating_point", pointSelect.value);
    else if (threshold.value !== "" && threshold.value !== threshold.dataset.modelValue) body.append("threshold", threshold.value);
    ["patient-id", "note"].forEach((id) => {
      const v = document.getElementById(id).value.trim();
      if (v) body.append(id.replace("-", "_"), v);
    });
    if (document.getElementById("patient-id-from-header").checked) body.append("patient_id_from_header", "true");
    const batch = files.slice();
    const total = batch.reduce((n, f) => n + f.file.size, 0) || 1;
    batch.forEach((f) => setFileState(f, "waiting", 0, ""));
    setBusy(true);
    statusLine.textContent = "Uploading " + batch.length + " file(s)…";
    try {
      const fingerprint = JSON.stringify([...body.entries()].map(([k, v]) =>
        [k, typeof v === "string" ? v : [v.name, v.size, v.lastModified]]));
      const { status, body: data } = await upload(body, keyFor(fingerprint), (loaded, sent) => {
        if (loaded === null) {
          batch.forEach((f) => setFileState(f, "analysing…", 1, "busy"));
          statusLine.textContent = "Analysing…";
          return;
        }
        let offset = 0; // the request carries the files in order: share the bytes out among them
        const ratio = loaded / (sent || total);
        batch.forEach((f) => {
          const done = Math.min(Math.max(ratio * total - offset, 0), f.file.size) / (f.file.size || 1);
          offset += f.file.size;
          setFileState(f, done >= 1 ? "uploaded" : "uploading " + pct(done), done, "busy");
        });
      });
      batchKey = null; // answered: a new upload is a new request
      if (status === 201) {
        data.results.forEach((r, i) => {
          const item = batch[i];
          if (!item) return;
          if (r.error) setFileState(item, "not analysed", 1, "bad");
          else if (r.assessed === false) setFileState(item, "not assessed", 1, "warn");
          else setFileState(item, r.decision + (r.warning ? " (outside the model's scope)" : ""),
            1, r.warning ? "warn" : "ok");
        });
        const box = el("div", { class: "study" });
        results.prepend(box);
        cadx.renderStudy(data, box);
        statusLine.textContent = "Study " + data.id + " saved (" + data.seconds.toFixed(2) + " s of inference).";
        files = [];
        list.replaceChildren();
      } else {
        const errors = new Map((data.errors || []).map((x) => [x.filename, x.error]));
        batch.forEach((f) => setFileState(f, errors.get(f.file.name) || "not analysed", null, "bad"));
        statusLine.textContent = "Error " + status + ": " + (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
      }
    } catch (err) {
      statusLine.textContent = "Upload failed: " + err.message;
    } finally {
      setBusy(false);
    }
  });

  loadModels();
})();

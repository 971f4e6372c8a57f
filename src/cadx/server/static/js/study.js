/* One past study, opened from the history page. */
"use strict";
(function () {
  const box = document.getElementById("results");
  cadx.api("/api/v1/studies/" + encodeURIComponent(box.dataset.studyId))
    .then((study) => cadx.renderStudy(study, box))
    .catch((err) => box.replaceChildren(cadx.el("p", { class: "error", text: err.message })));
})();

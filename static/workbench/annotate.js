// Keyboard shortcuts for the annotate page: 1-9 label, S skip, U undo.
// Each key clicks the same button a mouse would, so the forms stay the one way in.
(function () {
  "use strict";
  let sent = false;
  function press(selector) {
    const el = document.querySelector(selector);
    if (el && !sent) { sent = true; el.click(); }
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
    const key = event.key.toLowerCase();
    if (/^[1-9]$/.test(key)) press('#label-form button[data-key="' + key + '"]');
    else if (key === "s") press("#skip-form button");
    else if (key === "u") press("#undo-form button");
  });
  // A form submit navigates; allow keys again if the browser restores the page from cache.
  window.addEventListener("pageshow", function () { sent = false; });
})();

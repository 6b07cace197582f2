// Latchkey's only script: progressive enhancements, nothing a page needs to work.
// (The Content-Security-Policy forbids inline handlers, so behaviour is bound here.)
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Ask before destructive actions: <form data-confirm="Question?">.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        ev.preventDefault();
      }
    });
  });
  // <button data-print> prints the page (recovery codes).
  document.querySelectorAll("button[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
});

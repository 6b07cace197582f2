// The push number page: wait for the answer on the authenticator, then
// continue the sign-in (the "Continue" button does the same without script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("push-wait");
  var form = document.getElementById("push-continue");
  if (!box || !form) { return; }
  var url = box.getAttribute("data-status-url");
  var state = document.getElementById("push-state");
  var done = false;
  function poll() {
    if (done) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { status: "error" }; })
      .then(function (doc) {
        if (doc.status === "pending") {
          setTimeout(poll, 1000);
          return;
        }
        done = true;
        if (state) {
          state.textContent = doc.status === "approved" ? "Approved. Signing you in…" : "The request was not approved.";
        }
        form.submit();
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 1000);
});

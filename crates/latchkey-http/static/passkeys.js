// Passkeys and security keys on the sign-in and security-info pages.
// The pages' forms do the work; this script only fills in what the
// authenticator answers (the Content-Security-Policy forbids inline script):
//
//   form[data-webauthn-register]  POST data-start-url (csrf, kind, label) → creation options;
//                                 navigator.credentials.create; the form posts the credential.
//   form[data-webauthn-signin]    POST data-challenge-url (csrf, next...) → request options;
//                                 navigator.credentials.get; the form posts the assertion.
//   form[data-passkey-autofill]   the same, started at once with conditional mediation, so the
//                                 browser offers passkeys in the username field's autofill.
//
// Binary fields travel as base64url; webauthn.js (loaded first) converts them.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var W = window.LatchkeyWebAuthn;
  if (!W || !window.PublicKeyCredential || !navigator.credentials) { return; }

  function say(form, text) {
    var status = form.querySelector("[data-webauthn-status]");
    if (status) { status.textContent = text; }
  }

  // What the browser's refusal means, in words.
  function explain(err) {
    switch (err && err.name) {
      case "NotAllowedError":
        return "Nothing was used: the request was cancelled or timed out. Try again.";
      case "InvalidStateError":
        return "This passkey or security key is already registered for your account.";
      case "SecurityError":
        return "This browser refuses passkeys at this address. Open the address named above and try again.";
      case "NotSupportedError":
        return "This browser or authenticator cannot do that. Try another one.";
      default:
        return (err && err.message) || "Something went wrong. Try again.";
    }
  }

  // POST the form's own fields (CSRF token included) and read the JSON answer.
  function ask(url, form, extra) {
    var body = new URLSearchParams(new FormData(form));
    Object.keys(extra || {}).forEach(function (k) { body.set(k, extra[k]); });
    return fetch(url, { method: "POST", credentials: "same-origin", body: body }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (doc) {
        if (r.ok) { return doc; }
        // A problem document in the page's words; Location: sign in (again) there.
        var err = new Error(doc.detail || "The server refused (" + r.status + ").");
        err.location = r.headers.get("location");
        throw err;
      });
    });
  }

  function failed(form, err) {
    if (err && err.name === "AbortError") { return; }
    if (err && err.location) {
      window.location.assign(err.location);
      return;
    }
    say(form, explain(err));
  }

  // ---- registration ----------------------------------------------------------
  document.querySelectorAll("form[data-webauthn-register]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(form, "Follow your browser's prompts…");
      ask(form.getAttribute("data-start-url"), form)
        .then(function (start) {
          return navigator.credentials.create({ publicKey: W.creationOptions(start.publicKey) }).then(function (cred) {
            form.elements.ceremony_id.value = start.ceremony_id;
            form.elements.credential.value = JSON.stringify(W.registrationJSON(cred));
            form.submit();
          });
        })
        .catch(function (err) { failed(form, err); });
    });
  });

  // ---- sign-in ----------------------------------------------------------------
  var pending = null; // the autofill request, cancelled when a button is used

  function signIn(form, conditional) {
    var options = {};
    if (conditional) {
      pending = new AbortController();
      options = { mediation: "conditional", signal: pending.signal };
    }
    return ask(form.getAttribute("data-challenge-url"), form).then(function (start) {
      options.publicKey = W.requestOptions(start.publicKey);
      return navigator.credentials.get(options).then(function (cred) {
        form.elements.assertion.value = JSON.stringify(W.assertionJSON(cred));
        form.submit();
      });
    });
  }

  document.querySelectorAll("form[data-webauthn-signin]").forEach(function (form) {
    form.hidden = false;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (pending) { pending.abort(); pending = null; }
      say(form, "Follow your browser's prompts…");
      signIn(form, false).catch(function (err) { failed(form, err); });
    });
  });

  var autofill = document.querySelector("form[data-passkey-autofill]");
  if (autofill && PublicKeyCredential.isConditionalMediationAvailable) {
    PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
      if (available) {
        signIn(autofill, true).catch(function (err) {
          // A refusal here is silent unless it says something useful.
          if (err && err.name !== "AbortError" && err.name !== "NotAllowedError") { failed(autofill, err); }
        });
      }
    });
  }
});

// Latchkey Authenticator (PWA). Plain JS, no third-party code.
//
// Enrollment: a P-256 key pair is generated with WebCrypto as NON-EXTRACTABLE
// (the private key can sign but never be exported) and kept in IndexedDB;
// the public key (raw SEC1 point) goes to POST /api/v1/push/devices with the
// one-time token from the URL fragment (#enroll=...).
// Prompts: read from GET /api/v1/push/prompts/stream (Server-Sent Events, read
// with fetch so the device token travels in the Authorization header, not in
// the URL). Answers: ECDSA P-256/SHA-256 over the canonical payload
//   "latchkey-push-v1\n{prompt id}\n{challenge}\n{number}\n{decision}"
// posted to /api/v1/push/prompts/{id}/answer.
"use strict";
(function () {
  var DB = "latchkey-authenticator", STORE = "device", KEY = "current";

  function db() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open(DB, 1);
      req.onupgradeneeded = function () { req.result.createObjectStore(STORE); };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }
  function idb(mode, fn) {
    return db().then(function (d) {
      return new Promise(function (resolve, reject) {
        var tx = d.transaction(STORE, mode);
        var req = fn(tx.objectStore(STORE));
        tx.oncomplete = function () { resolve(req && req.result); };
        tx.onerror = function () { reject(tx.error); };
      });
    });
  }
  function loadDevice() { return idb("readonly", function (s) { return s.get(KEY); }); }
  function saveDevice(d) { return idb("readwrite", function (s) { return s.put(d, KEY); }); }

  function b64url(buf) {
    var s = "", bytes = new Uint8Array(buf);
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function $(id) { return document.getElementById(id); }
  function status(text) { $("status").textContent = text; }

  function enroll(token) {
    var label = $("device-label").value.trim() || null;
    var pair;
    status("Creating this device's key…");
    return crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"])
      .then(function (p) { pair = p; return crypto.subtle.exportKey("raw", p.publicKey); })
      .then(function (raw) {
        return fetch("/api/v1/push/devices", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ enrollment_token: token, public_key: b64url(raw), label: label })
        });
      })
      .then(function (r) {
        return r.json().then(function (doc) {
          if (!r.ok) { throw new Error(doc.detail || ("HTTP " + r.status)); }
          return doc;
        });
      })
      .then(function (doc) {
        var device = { username: doc.username, methodId: doc.method_id, token: doc.device_token, privateKey: pair.privateKey };
        return saveDevice(device).then(function () { return device; });
      });
  }

  function fmtTime(secs) {
    try { return new Date(secs * 1000).toLocaleString(); } catch (e) { return String(secs); }
  }

  function answer(device, prompt, form, decision) {
    var number = null;
    if (decision === "approve") {
      var v = form.elements.number.value.trim();
      if (!/^[0-9]{1,2}$/.test(v)) {
        form.querySelector("[data-field=result]").textContent = "Type the two-digit number from the sign-in screen.";
        return;
      }
      number = parseInt(v, 10);
    }
    var payload = ["latchkey-push-v1", prompt.id, prompt.challenge, number === null ? "" : String(number), decision].join("\n");
    Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) { b.disabled = true; });
    crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, device.privateKey, new TextEncoder().encode(payload))
      .then(function (sig) {
        return fetch("/api/v1/push/prompts/" + encodeURIComponent(prompt.id) + "/answer", {
          method: "POST",
          headers: { "Content-Type": "application/json", "Authorization": "Bearer " + device.token },
          body: JSON.stringify({ decision: decision, number: number, signature: b64url(sig) })
        });
      })
      .then(function (r) { return r.json().then(function (doc) { return { ok: r.ok, doc: doc }; }); })
      .then(function (res) {
        var out = form.querySelector("[data-field=result]");
        if (!res.ok) { out.textContent = "Refused: " + (res.doc.detail || "error"); return; }
        var words = { approved: "Approved.", denied: "Denied.", reported: "Denied and reported. Your security team has been alerted.",
          wrong_number: "That number did not match, so the sign-in was refused." };
        out.textContent = words[res.doc.status] || res.doc.status;
        form.setAttribute("data-status", res.doc.status);
      })
      .catch(function (e) { form.querySelector("[data-field=result]").textContent = "Could not send: " + e.message; });
  }

  function showPrompt(device, prompt) {
    if (document.querySelector("[data-prompt-id='" + prompt.id + "']")) { return; }
    $("idle").hidden = true;
    var form = $("prompt-template").content.firstElementChild.cloneNode(true);
    form.setAttribute("data-prompt-id", prompt.id);
    form.querySelector("[data-field=username]").textContent = prompt.username;
    form.querySelector("[data-field=application]").textContent = prompt.application || "(not named)";
    form.querySelector("[data-field=source]").textContent =
      (prompt.source_ip || "unknown address") + " (" + (prompt.location || "unknown location") + ")";
    form.querySelector("[data-field=time]").textContent = fmtTime(prompt.created_at);
    form.addEventListener("submit", function (ev) { ev.preventDefault(); answer(device, prompt, form, "approve"); });
    Array.prototype.forEach.call(form.querySelectorAll("button[type=button]"), function (b) {
      b.addEventListener("click", function () { answer(device, prompt, form, b.getAttribute("data-decision")); });
    });
    $("prompt-list").prepend(form);
    form.elements.number.focus();
  }

  // Read the text/event-stream; reconnect after a pause if it ends.
  function listen(device) {
    $("prompts").hidden = false;
    status("Ready for sign-in requests for " + device.username + ".");
    fetch("/api/v1/push/prompts/stream", { headers: { "Authorization": "Bearer " + device.token, "Accept": "text/event-stream" } })
      .then(function (r) {
        if (r.status === 401) { status("This device is no longer registered. Register it again from your security info."); return null; }
        if (!r.ok || !r.body) { throw new Error("HTTP " + r.status); }
        var reader = r.body.getReader(), decoder = new TextDecoder(), buf = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) { throw new Error("stream closed"); }
            buf += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
            var end;
            while ((end = buf.indexOf("\n\n")) >= 0) {
              var block = buf.slice(0, end); buf = buf.slice(end + 2);
              var event = "message", data = [];
              block.split("\n").forEach(function (line) {
                if (!line || line[0] === ":") { return; }
                var i = line.indexOf(":"), field = i < 0 ? line : line.slice(0, i);
                var value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
                if (field === "event") { event = value; } else if (field === "data") { data.push(value); }
              });
              if (event === "prompt" && data.length) { showPrompt(device, JSON.parse(data.join("\n"))); }
            }
            return pump();
          });
        }
        return pump();
      })
      .catch(function () { setTimeout(function () { listen(device); }, 3000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.crypto || !crypto.subtle || !window.indexedDB) {
      status("This browser cannot keep a device key (WebCrypto and IndexedDB are needed; use https).");
      return;
    }
    var m = /(?:^#|&)enroll=([^&]+)/.exec(location.hash);
    loadDevice().then(function (device) {
      if (m) {
        $("enroll").hidden = false;
        status(device ? "This device is registered for " + device.username + "; registering again replaces it." : "Register this device to approve sign-ins.");
        $("enroll-button").addEventListener("click", function () {
          $("enroll-button").disabled = true;
          enroll(decodeURIComponent(m[1])).then(function (d) {
            history.replaceState(null, "", "/authenticator");
            $("enroll").hidden = true;
            listen(d);
          }).catch(function (e) { status("Registration failed: " + e.message); $("enroll-button").disabled = false; });
        });
      } else if (device) {
        listen(device);
      } else {
        status("Not registered yet. Open the enrollment link from your security info page.");
      }
    });
    // Installable, and opens offline (the shell only; see authenticator-sw.js).
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register("/authenticator/sw.js", { scope: "/authenticator" }).catch(function () {});
    }
  });
})();

// Latchkey WebAuthn helper for the web UI. Plain browser JavaScript, no
// dependencies. Served at /static/webauthn.js; exposes `window.LatchkeyWebAuthn`.
//
// The JSON API carries binary WebAuthn fields as base64url strings; the
// browser API wants ArrayBuffers. This file converts both ways and calls
// the Latchkey endpoints:
//
//   await LatchkeyWebAuthn.register(username, "passkey" | "security_key", label?, {token?})
//   await LatchkeyWebAuthn.signInSecondFactor(flowId)        // after the password step
//   await LatchkeyWebAuthn.signInWithPasskey({conditional?})  // usernameless
//   await LatchkeyWebAuthn.signInPasswordless(flowId)         // username given, no password
//
// Each sign-in helper resolves to the verify response
// ({state, amr, acr, session_token?, ...}); errors reject with an Error whose
// `problem` holds the server's problem+json document when there is one.
(function (global) {
  "use strict";

  function b64urlToBuffer(s) {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    const pad = b64.length % 4 === 0 ? "" : "=".repeat(4 - (b64.length % 4));
    const bin = atob(b64 + pad);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function bufferToB64url(buf) {
    const bytes = new Uint8Array(buf);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // Server options (base64url strings) -> browser options (ArrayBuffers).
  function creationOptions(pk) {
    const o = Object.assign({}, pk);
    o.challenge = b64urlToBuffer(pk.challenge);
    o.user = Object.assign({}, pk.user, { id: b64urlToBuffer(pk.user.id) });
    if (pk.excludeCredentials) {
      o.excludeCredentials = pk.excludeCredentials.map((c) => Object.assign({}, c, { id: b64urlToBuffer(c.id) }));
    }
    return o;
  }

  function requestOptions(pk) {
    const o = Object.assign({}, pk);
    o.challenge = b64urlToBuffer(pk.challenge);
    if (pk.allowCredentials) {
      o.allowCredentials = pk.allowCredentials.map((c) => Object.assign({}, c, { id: b64urlToBuffer(c.id) }));
    }
    return o;
  }

  // Browser credential -> JSON the server parses (webauthn-rs's shape).
  function registrationJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: bufferToB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: bufferToB64url(r.attestationObject),
        clientDataJSON: bufferToB64url(r.clientDataJSON),
        transports: typeof r.getTransports === "function" ? r.getTransports() : undefined,
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    };
  }

  function assertionJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: bufferToB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: bufferToB64url(r.authenticatorData),
        clientDataJSON: bufferToB64url(r.clientDataJSON),
        signature: bufferToB64url(r.signature),
        userHandle: r.userHandle ? bufferToB64url(r.userHandle) : null,
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    };
  }

  async function api(path, body, opts) {
    const headers = { "content-type": "application/json" };
    if (opts && opts.token) headers.authorization = "Bearer " + opts.token;
    const resp = await fetch(path, {
      method: "POST",
      headers: headers,
      credentials: "same-origin",
      body: JSON.stringify(body || {}),
    });
    const text = await resp.text();
    const data = text ? JSON.parse(text) : null;
    if (!resp.ok) {
      const err = new Error((data && (data.detail || data.title)) || resp.statusText);
      err.problem = data;
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  const base = "/api/v1";
  const enc = encodeURIComponent;

  async function register(username, kind, label, opts) {
    const start = await api(base + "/users/" + enc(username) + "/methods/webauthn/register/start",
      { kind: kind, label: label || undefined }, opts);
    const cred = await navigator.credentials.create({ publicKey: creationOptions(start.publicKey) });
    return api(base + "/users/" + enc(username) + "/methods/webauthn/register/finish",
      { ceremony_id: start.ceremony_id, credential: registrationJSON(cred) }, opts);
  }

  async function assertAndVerify(flowId, publicKey, mediation, opts) {
    const req = { publicKey: requestOptions(publicKey) };
    if (mediation) req.mediation = mediation;
    const cred = await navigator.credentials.get(req);
    return api(base + "/signin/" + enc(flowId) + "/verify",
      { method: "webauthn", assertion: assertionJSON(cred) }, opts);
  }

  async function signInSecondFactor(flowId, opts) {
    const ch = await api(base + "/signin/" + enc(flowId) + "/webauthn/challenge", {}, opts);
    return assertAndVerify(flowId, ch.publicKey, null, opts);
  }

  // A flow started with a username and no password.
  const signInPasswordless = signInSecondFactor;

  async function signInWithPasskey(options) {
    const o = options || {};
    const start = await api(base + "/signin/passkey/start", o.application ? { application: o.application } : {}, o);
    const conditional = o.conditional && global.PublicKeyCredential &&
      PublicKeyCredential.isConditionalMediationAvailable &&
      (await PublicKeyCredential.isConditionalMediationAvailable());
    return assertAndVerify(start.flow_id, start.publicKey, conditional ? "conditional" : null, o);
  }

  global.LatchkeyWebAuthn = {
    b64urlToBuffer: b64urlToBuffer,
    bufferToB64url: bufferToB64url,
    creationOptions: creationOptions,
    requestOptions: requestOptions,
    registrationJSON: registrationJSON,
    assertionJSON: assertionJSON,
    register: register,
    signInSecondFactor: signInSecondFactor,
    signInPasswordless: signInPasswordless,
    signInWithPasskey: signInWithPasskey,
  };
})(typeof window !== "undefined" ? window : globalThis);

// Latchkey Authenticator service worker: makes the app installable and lets
// it open without a network (the shell only). Prompts, answers and the event
// stream always go to the server: nothing that decides a sign-in is cached.
"use strict";
var CACHE = "latchkey-authenticator-v1";
var SHELL = ["/authenticator", "/authenticator/app.js", "/authenticator/manifest.webmanifest", "/authenticator/icon.svg",
  "/static/latchkey.css"];

self.addEventListener("install", function (e) {
  e.waitUntil(caches.open(CACHE).then(function (c) { return c.addAll(SHELL); }));
});

self.addEventListener("activate", function (e) {
  e.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k !== CACHE; }).map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (e) {
  var url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== self.location.origin || SHELL.indexOf(url.pathname) < 0) {
    return; // the API and the stream: straight to the network
  }
  // Network first (updates apply at once), the cached shell when offline.
  e.respondWith(fetch(e.request).catch(function () { return caches.match(e.request); }));
});

// Push approval with number matching in Debian's headless Chromium: the PWA at
// /authenticator (a second page of the same browser) enrolls with a WebCrypto
// key, the sign-in page shows the number, the PWA types it and approves, and
// the sign-in page continues by itself. Both pages must not trip the CSP.
//
// Run: cd tests/browser && node --test push.test.js   (needs target/debug/latchkey and /usr/bin/chromium)
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { ROOT, BIN, ENV, totp, stepNow, startServer, stopServer, launchChromium } = require("./harness");

const SHOTS = path.join(ROOT, "test-output", "screenshots");
const PASSWORD = "correct horse battery staple";

let lk, server, base, dataDir, browser, context, token;
const cspViolations = [];


async function api(method, p, body) {
  const r = await fetch(`${base}/api/v1${p}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

function watchCsp(page, label) {
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(`${label}: ${m.text()}`);
  });
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  lk = await startServer("lk-push-browser-");
  ({ server, base, dataDir } = lk);
  const out = execFileSync(BIN, ["admin", "api-token", "create", "--name", "push-browser", "--json", "--data", dataDir], {
    env: ENV,
  });
  token = JSON.parse(out.toString()).token;
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer(lk);
});

test("the PWA enrolls, the sign-in page shows the number, the PWA approves it, the sign-in completes", async () => {
  assert.equal((await api("POST", "/users", { username: "pat", display_name: "Pat" })).status, 201);
  assert.equal((await api("PUT", "/users/pat/password", { password: PASSWORD })).status, 204);
  const enrol = await api("POST", "/users/pat/methods/push/enrollments", { label: "Browser PWA" });
  assert.equal(enrol.status, 201, JSON.stringify(enrol.json));

  // The authenticator: a second page in the same Chromium.
  const pwa = await context.newPage();
  watchCsp(pwa, "pwa");
  const resp = await pwa.goto(enrol.json.enrollment_url);
  assert.match(resp.headers()["content-security-policy"], /script-src 'self'/);
  await pwa.getByRole("button", { name: "Register this device" }).click();
  await pwa.getByText("Ready for sign-in requests for pat.").waitFor({ timeout: 15_000 });
  const stored = await pwa.evaluate(
    () =>
      new Promise((resolve) => {
        const req = indexedDB.open("latchkey-authenticator", 1);
        req.onsuccess = () => {
          const get = req.result.transaction("device").objectStore("device").get("current");
          get.onsuccess = () => resolve({ extractable: get.result.privateKey.extractable, type: get.result.privateKey.type });
        };
      })
  );
  assert.deepEqual(stored, { extractable: false, type: "private" }, "the private key is a non-extractable CryptoKey");
  const sw = await pwa.evaluate(() => navigator.serviceWorker.ready.then((r) => r.scope));
  // The app lives at the server's public URL (pages for people are sent to localhost).
  assert.equal(sw, `${new URL(enrol.json.enrollment_url).origin}/authenticator`, "the service worker controls the app (installable)");

  // The sign-in page.
  const page = await context.newPage();
  watchCsp(page, "signin");
  await page.goto(`${base}/signin?next=/security-info`);
  await page.getByLabel("Username").fill("pat");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Next", exact: true }).click()]);
  await page.getByLabel("Password").fill(PASSWORD);
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Sign in", exact: true }).click()]);
  await page.getByRole("heading", { name: "Approve the notification on your phone" }).waitFor();
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Send a notification" }).click()]);
  const number = (await page.locator("#push-number").textContent()).trim();
  assert.match(number, /^[1-9][0-9]$/);
  await page.screenshot({ path: path.join(SHOTS, "push-01-number.png"), fullPage: true });

  // The PWA shows the request (without the number) and the person types it.
  const prompt = pwa.locator("form.prompt").first();
  await prompt.waitFor({ timeout: 15_000 });
  assert.equal((await prompt.locator("[data-field=username]").textContent()).trim(), "pat");
  assert.match(await prompt.locator("[data-field=source]").textContent(), /127\.0\.0\.1/);
  await prompt.getByLabel("Type the number shown on the sign-in screen").fill(number);
  await pwa.screenshot({ path: path.join(SHOTS, "push-02-pwa.png"), fullPage: true });
  await prompt.getByRole("button", { name: "Approve" }).click();
  await prompt.locator("[data-field=result]", { hasText: "Approved." }).waitFor({ timeout: 10_000 });

  // The sign-in page notices the approval and continues on its own.
  await page.waitForURL(/\/security-info$/, { timeout: 15_000 });
  const session = (await context.cookies()).find((c) => c.name === "lk_session");
  assert.ok(session && session.value.startsWith("lk_s_"), "signed in");
  await page.getByText("Browser PWA").first().waitFor();
  await page.screenshot({ path: path.join(SHOTS, "push-03-signed-in.png"), fullPage: true });
  assert.deepEqual(cspViolations, [], "no Content-Security-Policy violations");
});

test("a wrong number typed in the PWA refuses the sign-in", async () => {
  const pwa = context.pages()[0];
  const page = await context.newPage();
  watchCsp(page, "signin-2");
  await page.goto(`${base}/signin?next=/security-info&prompt=login`);
  await page.getByLabel("Username").fill("pat");
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Next", exact: true }).click()]);
  await page.getByLabel("Password").fill(PASSWORD);
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Sign in", exact: true }).click()]);
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Send a notification" }).click()]);
  const number = Number((await page.locator("#push-number").textContent()).trim());
  const wrong = String(number === 99 ? 10 : number + 1);
  const fresh = pwa.locator("form.prompt:not([data-status])").first();
  await fresh.waitFor({ timeout: 15_000 });
  const prompt = pwa.locator(`form.prompt[data-prompt-id="${await fresh.getAttribute("data-prompt-id")}"]`);
  await prompt.getByLabel("Type the number shown on the sign-in screen").fill(wrong);
  await prompt.getByRole("button", { name: "Approve" }).click();
  await prompt.locator("[data-field=result]", { hasText: "did not match" }).waitFor({ timeout: 10_000 });
  await page.getByText("did not match").waitFor({ timeout: 15_000 });
  assert.doesNotMatch(page.url(), /\/security-info$/);
  assert.deepEqual(cspViolations, [], "no Content-Security-Policy violations");
});

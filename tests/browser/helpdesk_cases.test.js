// End-to-end test of the helpdesk recovery case pages in Debian's headless Chromium.
//
// A lost-phone case, start to finish, with two browsers: the admin (helpdesk)
// drives the case; alice, in a second browser context, signs in with the
// Temporary Access Pass the admin read from the page, registers a new
// authenticator app, and later signs in normally. Every case page is checked
// with axe-core and screenshotted into test-output/screenshots/cases/.
//
// Run: cd tests/browser && node --test helpdesk_cases.test.js
//      (needs target/debug/latchkey and /usr/bin/chromium)
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { ROOT, BIN, ENV, totp, stepNow, startServer, stopServer, launchChromium } = require("./harness");

// A folder of our own: web_ui.test.js empties test-output/screenshots/*.png when it starts.
const SHOTS = path.join(ROOT, "test-output", "screenshots", "cases");
const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const ALICE_PASSWORD = "alice's long enough passphrase";

let lk, server, base, bootstrapPass, dataDir, browser, apiToken;
let admin, alice; // { context, page }
const cspViolations = [];
let shotNo = 0;

// ---- helpers ------------------------------------------------------------------

async function newBrowser() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return { context, page };
}

/** Screenshot + accessibility check (no serious or critical axe violations). */
async function review(page, name) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"], runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] })
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    [],
    `axe-core found serious/critical violations on ${name}`
  );
  shotNo += 1;
  await page.screenshot({ path: path.join(SHOTS, `${String(shotNo).padStart(2, "0")}-${name}.png`), fullPage: true });
}

async function submit(page, buttonName) {
  const [resp] = await Promise.all([
    page.waitForNavigation(),
    page.getByRole("button", { name: buttonName, exact: true }).click(),
  ]);
  return resp;
}

async function signInWithTap(page, username, pass) {
  await page.goto(`${base}/signin?prompt=login`);
  await page.getByLabel("Username").fill(username);
  await submit(page, "Next");
  // A pass from the helpdesk (or no password at all): the pass is asked first.
  await page.getByRole("heading", { name: "Enter your Temporary Access Pass" }).waitFor();
  await page.getByLabel("Temporary Access Pass").fill(pass);
  await submit(page, "Sign in");
  assert.match(page.url(), /\/security-info$/);
}

/** Register an authenticator app on /security-info; returns [secret, confirmed step]. */
async function addTotp(page, name) {
  await page.goto(`${base}/security-info`);
  await page.getByLabel("Name (optional)").fill(name);
  await submit(page, "Add authenticator app");
  const secret = await page.locator("#totp-secret").getAttribute("data-secret");
  assert.match(secret, /^[A-Z2-7]{16,}$/);
  const step = stepNow();
  await page.getByLabel("Code from the app").fill(totp(secret, step));
  await submit(page, "Confirm");
  assert.match(page.url(), /\/security-info\?done=totp_added$/);
  return [secret, step];
}

async function api(method, p, body) {
  const resp = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${apiToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  assert.ok(resp.ok, `${method} ${p} → ${resp.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The case page's step list item for a step (by its snake_case name). */
const stepItem = (page, step) => page.locator(`li[data-step="${step}"]`);

// ---- lifecycle ----------------------------------------------------------------
before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.endsWith(".png")) fs.unlinkSync(path.join(SHOTS, f));
  lk = await startServer("lk-cases-");
  ({ server, base, bootstrapPass, dataDir } = lk);
  browser = await launchChromium();
  admin = await newBrowser();
  alice = await newBrowser();
});

after(async () => {
  if (browser) await browser.close();
  await stopServer(lk);
});

// ---- the walk-through -----------------------------------------------------------
let aliceOldTotpId, caseUrl, pass;

test("setup: the admin signs in with the bootstrap pass; alice is created over the API", async () => {
  await signInWithTap(admin.page, "admin", bootstrapPass);
  await addTotp(admin.page, "Admin phone");

  const out = execFileSync(BIN, ["admin", "api-token", "create", "--name", "t", "--data", dataDir, "--json"], { env: ENV });
  apiToken = JSON.parse(out.toString()).token;
  assert.match(apiToken, /^lk_at_/);

  await api("POST", "/api/v1/users", { username: "alice", display_name: "Alice Example", department: "Finance" });
  await api("PUT", "/api/v1/users/alice/password", { password: ALICE_PASSWORD });
  const enrol = await api("POST", "/api/v1/users/alice/methods/totp", { label: "Old phone" });
  await api("POST", `/api/v1/users/alice/methods/totp/${enrol.id}/confirm`, { code: totp(enrol.secret, stepNow()) });
  aliceOldTotpId = enrol.id;
  await api("POST", "/api/v1/users/alice/devices", { name: "Alice's old iPhone", platform: "ios", ownership: "byod" });
});

test("the helpdesk user page lists devices with a mark-lost button and links to the runbooks", async () => {
  const { page } = admin;
  await page.goto(`${base}/helpdesk/users/alice`);
  const row = page.locator("tr", { hasText: "Alice's old iPhone" });
  assert.match(await row.innerText(), /Active/);
  await row.getByRole("button", { name: /Mark lost/ }).waitFor();
  await review(page, "helpdesk-user");
  await Promise.all([page.waitForNavigation(), page.getByRole("link", { name: "Lost or broken phone" }).click()]);
  assert.equal(new URL(page.url()).pathname, "/helpdesk/users/alice/cases");
});

test("opens a lost-phone case from the user's case list", async () => {
  const { page } = admin;
  assert.equal(await page.getByLabel("Runbook").inputValue(), "lost_phone", "the runbook from the link is preselected");
  await page.getByText("No recovery cases yet.").waitFor();
  await review(page, "list-empty");
  await submit(page, "Open case");
  assert.match(page.url(), /\/helpdesk\/cases\/[^/?]+$/);
  caseUrl = page.url();
  assert.match(await page.locator("#case-state").innerText(), /Open/);
  assert.equal(await page.locator("li[data-step]").count(), 7);
  assert.match(await stepItem(page, "verify_identity").innerText(), /Next/);
  assert.match(await stepItem(page, "issue_tap").innerText(), /Pending/);
  // Only the next step has a form; identity verification cannot be skipped.
  assert.equal(await page.locator("li[data-step] form").count(), 1);
  assert.equal(await page.getByRole("button", { name: "Skip step" }).count(), 0);
  await review(page, "case-opened");
});

test("verifies the caller's identity", async () => {
  const { page } = admin;
  await page.getByLabel("How did you verify the caller?").selectOption("callback");
  await page.getByLabel("Note (who checked what)").fill("Called back +1 555 0100 from HR records");
  await submit(page, "Record verification");
  const item = await stepItem(page, "verify_identity").innerText();
  assert.match(item, /Done/);
  assert.match(item, /Called back the number on file: Called back \+1 555 0100/);
  assert.match(item, /user:admin/);
});

test("issues the pass and shows it once, with the never-by-email warning", async () => {
  const { page } = admin;
  await page.getByLabel(/Lifetime in minutes/).fill("60");
  const resp = await submit(page, "Issue pass");
  assert.equal(resp.status(), 200);
  assert.equal(resp.headers()["cache-control"], "no-store");
  pass = (await page.locator("#tap-pass").innerText()).trim();
  assert.ok(pass.length >= 8, `a pass is shown: ${pass}`);
  assert.match(await page.locator("#issued-pass").innerText(), /Never send it by email/);
  assert.match(await stepItem(page, "issue_tap").innerText(), /Pass issued, valid until .*single use/);
  await review(page, "case-pass-issued");
  // Once: the case page itself never shows it again.
  await page.goto(caseUrl);
  assert.equal(await page.locator("#tap-pass").count(), 0);
  assert.ok(!(await page.content()).includes(pass), "the pass is not on the page any more");
});

test("records delivery by phone; email is not offered", async () => {
  const { page } = admin;
  const channels = await page.getByLabel("How was the pass delivered?").locator("option").allInnerTexts();
  assert.ok(channels.length >= 2);
  assert.ok(!channels.some((c) => /mail/i.test(c)), `no email channel: ${channels}`);
  await page.getByLabel("How was the pass delivered?").selectOption("phone_call");
  await page.getByLabel("Note (optional)").fill("Read aloud to Alice");
  await submit(page, "Record delivery");
  assert.match(await stepItem(page, "deliver_tap").innerText(), /Done[\s\S]*Read aloud on a call to the number on file: Read aloud to Alice/);
});

test("confirming too early shows the App's refusal on the page", async () => {
  const { page } = admin;
  const resp = await submit(page, "Confirm new registration");
  assert.equal(resp.status(), 409);
  await page.getByRole("alert").filter({ hasText: "the user has not registered a new method since the case opened" }).waitFor();
  assert.match(await stepItem(page, "confirm_registration").innerText(), /Next/);
  await review(page, "case-refused");
});

let newSecret, newStep;

test("alice signs in with the pass and registers a new authenticator app", async () => {
  await signInWithTap(alice.page, "alice", pass);
  // She still has her old (lost) app and a password, so the page says she is set; she adds the new phone.
  [newSecret, newStep] = await addTotp(alice.page, "New phone");
});

test("the admin confirms the registration and removes the old methods", async () => {
  const { page } = admin;
  await page.goto(caseUrl);
  await submit(page, "Confirm new registration");
  assert.match(await stepItem(page, "confirm_registration").innerText(), /Done[\s\S]*New: Authenticator app “New phone”/);

  const old = page.getByRole("checkbox", { name: /Old phone/ });
  assert.match(await page.locator(`label[for="m-${aliceOldTotpId}"]`).innerText(), /registered before the case/);
  await old.check();
  await review(page, "case-remove-old");
  await submit(page, "Remove selected");
  assert.match(await stepItem(page, "remove_old_methods").innerText(), /Done[\s\S]*1 method\(s\) removed, 0 device\(s\) marked lost/);
  const methods = await api("GET", "/api/v1/users/alice/methods");
  const list = Array.isArray(methods) ? methods : methods.methods;
  assert.ok(!JSON.stringify(list).includes(aliceOldTotpId), "the old TOTP is gone");
});

test("alice signs in normally; the admin confirms it and closes the case", async () => {
  const { page: ap } = alice;
  await alice.context.clearCookies();
  await ap.goto(`${base}/signin`);
  await ap.getByLabel("Username").fill("alice");
  await submit(ap, "Next");
  await ap.getByLabel("Password").fill(ALICE_PASSWORD);
  await submit(ap, "Sign in");
  await ap.getByRole("heading", { name: "Enter the code from your authenticator app" }).waitFor();
  await ap.getByLabel("Code").fill(totp(newSecret, Math.max(stepNow(), newStep) + 1));
  await submit(ap, "Sign in");
  assert.equal(new URL(ap.url()).pathname, "/security-info");

  const { page } = admin;
  await page.goto(caseUrl);
  await submit(page, "Confirm normal sign-in");
  assert.match(await stepItem(page, "confirm_sign_in").innerText(), /Done[\s\S]*Signed in/);
  await page.getByLabel("Closing note (optional)").fill("Alice is back in");
  await submit(page, "Close case");

  assert.match(await page.locator("#case-state").innerText(), /Closed/);
  const items = page.locator("li[data-step]");
  assert.equal(await items.count(), 7);
  for (const text of await items.allInnerTexts()) assert.match(text, /\bDone\b/, text);
  assert.equal(await page.locator("li[data-step] form").count(), 0, "a closed case has no forms");
  assert.equal(await page.getByRole("button", { name: "Cancel case" }).count(), 0);
  await review(page, "case-closed");

  await page.goto(`${base}/helpdesk/users/alice/cases`);
  const row = page.locator("tbody tr", { hasText: "Lost or broken phone" });
  assert.match(await row.innerText(), /Closed/);
  await review(page, "list-closed");
});

test("a second case can be skipped through and cancelled; errors stay on the page", async () => {
  const { page } = admin;
  await page.getByLabel("Runbook").selectOption("planned_phone_change");
  await submit(page, "Open case");
  await page.getByLabel("How did you verify the caller?").selectOption("video_call");
  await page.getByLabel("Note (who checked what)").fill("Video call, badge shown");
  await submit(page, "Record verification");
  await page.locator("summary", { hasText: "Skip this step" }).click();
  await page.getByLabel("Why skip it?").fill("User still has the old phone and registers the new one themselves");
  await submit(page, "Skip step");
  assert.match(await stepItem(page, "issue_tap").innerText(), /Skipped[\s\S]*Reason: User still has the old phone/);
  await page.getByLabel("Reason for cancelling").fill("Duplicate ticket");
  await submit(page, "Cancel case");
  assert.match(await page.locator("#case-state").innerText(), /Cancelled/);
});

test("the case pages need the helpdesk role", async () => {
  const resp = await alice.page.goto(caseUrl);
  assert.equal(new URL(alice.page.url()).pathname, new URL(caseUrl).pathname, "alice is signed in, not redirected");
  assert.equal(resp.status(), 403);
  const list = await alice.page.goto(`${base}/helpdesk/users/alice/cases`);
  assert.equal(list.status(), 403);
});

test("the helpdesk marks a device lost from the user page", async () => {
  const { page } = admin;
  await page.goto(`${base}/helpdesk/users/alice`);
  const row = page.locator("tr", { hasText: "Alice's old iPhone" });
  await Promise.all([page.waitForNavigation(), row.getByRole("button", { name: /Mark lost/ }).click()]);
  await page.getByText("The device was marked lost").waitFor();
  assert.match(await page.locator("tr", { hasText: "Alice's old iPhone" }).innerText(), /Lost/);
  assert.equal(await page.getByRole("button", { name: /Mark lost/ }).count(), 0, "no button for a lost device");
});

test("no page tripped the Content-Security-Policy", () => {
  assert.deepEqual(cspViolations, []);
});

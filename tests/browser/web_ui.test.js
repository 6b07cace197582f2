// End-to-end test of the web UI in Debian's headless Chromium.
//
// Starts `latchkey serve` on a free port with a fresh data directory, then walks
// through what a first administrator does: sign in with the bootstrap pass,
// register an authenticator app (reading the key from the page), set a password,
// sign out, sign in with password + TOTP (a wrong code first), create a user,
// and look around the helpdesk and admin consoles. Every page is checked with
// axe-core (no serious or critical violations), must not trip our own CSP, and
// is screenshotted into test-output/screenshots/.
//
// Run: cd tests/browser && node --test   (needs target/debug/latchkey and /usr/bin/chromium)
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { ROOT, BIN, ENV, totp, stepNow, startServer, stopServer, launchChromium } = require("./harness");

const SHOTS = path.join(ROOT, "test-output", "screenshots");
const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "frame-ancestors 'none'; form-action 'self'; base-uri 'none'";
const PASSWORD = "correct horse battery staple";

let lk, server, base, bootstrapPass, dataDir, browser, context, page;
const cspViolations = [];
let shotNo = 0;

// ---- helpers ------------------------------------------------------------------

async function shot(name) {
  shotNo += 1;
  const file = path.join(SHOTS, `${String(shotNo).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

async function checkA11y(label) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"], runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] })
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    [],
    `axe-core found serious/critical violations on ${label}`
  );
}

/** Screenshot + accessibility check of the page as it is now. */
async function review(name) {
  await checkA11y(name);
  await shot(name);
}

async function submit(buttonName) {
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: buttonName, exact: true }).click()]);
}

async function signInUsername(username) {
  await page.goto(`${base}/signin`);
  await page.getByLabel("Username").fill(username);
  await submit("Next");
}

// ---- lifecycle ----------------------------------------------------------------
before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.endsWith(".png")) fs.unlinkSync(path.join(SHOTS, f));
  lk = await startServer("lk-browser-");
  ({ server, base, bootstrapPass, dataDir } = lk);
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer(lk);
});

// ---- the walk-through -----------------------------------------------------------
test("sign-in page is served with strict security headers", async () => {
  const resp = await page.goto(`${base}/signin`);
  assert.equal(resp.status(), 200);
  const h = resp.headers();
  assert.equal(h["content-security-policy"], CSP);
  assert.equal(h["x-frame-options"], "DENY");
  assert.equal(h["x-content-type-options"], "nosniff");
  const cookies = await context.cookies();
  const csrf = cookies.find((c) => c.name === "lk_csrf");
  assert.ok(csrf && csrf.httpOnly && csrf.sameSite === "Lax", "CSRF nonce cookie is HttpOnly, SameSite=Lax");
  await review("signin");
});

test("the first admin signs in with the bootstrap pass", async () => {
  await signInUsername("admin");
  // Only a bootstrap pass, no password: the pass is asked first, the password one choice away.
  await page.getByRole("heading", { name: "Enter your Temporary Access Pass" }).waitFor();
  await page.locator("summary", { hasText: "Use another method" }).click();
  await page.getByRole("link", { name: "Use my password" }).waitFor();
  await page.getByLabel("Temporary Access Pass").fill(bootstrapPass);
  await review("signin-tap");
  await submit("Sign in");
  assert.match(page.url(), /\/security-info$/);
  const session = (await context.cookies()).find((c) => c.name === "lk_session");
  assert.ok(session, "lk_session cookie set");
  assert.ok(session.httpOnly, "lk_session is HttpOnly");
  assert.equal(session.sameSite, "Lax");
  assert.equal(session.path, "/");
  assert.match(session.value, /^lk_s_/);
  await page.getByText("You signed in with a Temporary Access Pass").waitFor();
  await review("security-info-after-tap");
});

let totpSecret, confirmedStep;

test("registers an authenticator app by reading the key from the page", async () => {
  await page.getByLabel("Name (optional)").fill("Test phone");
  await submit("Add authenticator app");
  assert.match(page.url(), /\/security-info\/totp\//);
  totpSecret = await page.locator("#totp-secret").getAttribute("data-secret");
  assert.match(totpSecret, /^[A-Z2-7]{16,}$/);
  await page.getByRole("img", { name: /QR code/ }).waitFor();
  await review("totp-enrol");

  const step = stepNow();
  const valid = new Set([totp(totpSecret, step - 1), totp(totpSecret, step), totp(totpSecret, step + 1)]);
  let wrong = "123456";
  while (valid.has(wrong)) wrong = String((Number(wrong) + 1) % 1_000_000).padStart(6, "0");
  await page.getByLabel("Code from the app").fill(wrong);
  await submit("Confirm");
  await page.getByRole("alert").filter({ hasText: "does not match" }).waitFor();
  await review("totp-enrol-wrong-code");

  confirmedStep = stepNow();
  await page.getByLabel("Code from the app").fill(totp(totpSecret, confirmedStep));
  await submit("Confirm");
  assert.match(page.url(), /\/security-info\?done=totp_added$/);
  await page.getByText("Your authenticator app is registered").waitFor();
  const row = page.locator("tr", { hasText: "Test phone" });
  assert.match(await row.innerText(), /Authenticator app/);
});

test("sets a password and creates recovery codes", async () => {
  await page.getByLabel("New password", { exact: true }).fill(PASSWORD);
  await page.getByLabel("Repeat the new password").fill(PASSWORD);
  await submit("Save password");
  await page.getByText("Your password was saved.").waitFor();

  await submit("Create recovery codes");
  const codes = await page.locator("#recovery-codes li").allInnerTexts();
  assert.equal(codes.length, 10);
  const href = await page.getByRole("link", { name: "Download as text" }).getAttribute("href");
  assert.ok(href.startsWith("data:text/plain"), "codes downloadable as text");
  assert.ok(decodeURIComponent(href).includes(codes[0].trim()));
  await review("recovery-codes");
  await Promise.all([page.waitForNavigation(), page.getByRole("link", { name: /I have saved them/ }).click()]);
  await review("security-info");
});

test("signs out with a POST", async () => {
  await submit("Sign out");
  assert.match(page.url(), /\/signin\?signed_out=1$/);
  await page.getByText("You have signed out.").waitFor();
  assert.ok(!(await context.cookies()).some((c) => c.name === "lk_session"), "session cookie cleared");
  const resp = await page.goto(`${base}/security-info`);
  assert.match(page.url(), /\/signin\?next=\/security-info$/, "signed-out users are sent to sign in");
  assert.equal(resp.status(), 200);
});

test("signs in with password + TOTP; a wrong code shows an error", async () => {
  await page.goto(`${base}/signin?next=/admin/users`);
  await page.getByLabel("Username").fill("admin");
  await submit("Next");
  await page.getByLabel("Password").fill("not the password at all");
  await submit("Sign in");
  await page.getByRole("alert").filter({ hasText: "username or password is not right" }).waitFor();
  await review("signin-wrong-password");

  await page.getByLabel("Password").fill(PASSWORD);
  await submit("Sign in");
  await page.getByRole("heading", { name: "Enter the code from your authenticator app" }).waitFor();
  await review("signin-totp");

  const step = stepNow();
  const valid = new Set([-1, 0, 1, 2].map((d) => totp(totpSecret, step + d)));
  let wrong = "000000";
  while (valid.has(wrong)) wrong = String(Number(wrong) + 7).padStart(6, "0");
  await page.getByLabel("Code").fill(wrong);
  const [resp] = await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: "Sign in" }).click()]);
  assert.equal(resp.status(), 401);
  const alert = page.getByRole("alert");
  assert.match(await alert.innerText(), /That code is not right/);
  assert.equal(await page.getByLabel("Code").getAttribute("aria-invalid"), "true");
  await review("signin-totp-wrong-code");

  // The code for the next time step: later than the one used to confirm, so not a replay.
  await page.getByLabel("Code").fill(totp(totpSecret, Math.max(stepNow(), confirmedStep) + 1));
  await submit("Sign in");
  assert.equal(new URL(page.url()).pathname, "/admin/users", "redirected to next");
});

test("the admin creates a user", async () => {
  await review("admin-users");
  // The page also has a roles form with its own Username field and role boxes.
  const create = page.getByRole("region", { name: "Create a user" });
  await create.getByLabel("Username").fill("alice");
  await create.getByLabel("Display name").fill("Alice Example");
  await create.getByLabel("Department (optional)").fill("Finance");
  await create.getByLabel("Groups (optional, comma-separated)").fill("staff, finance");
  await create.getByRole("checkbox", { name: "Helpdesk" }).check();
  await submit("Create user");
  await page.getByText("User 'alice' was created").waitFor();
  const row = page.locator("tbody tr", { hasText: "Alice Example" });
  assert.match(await row.innerText(), /Finance/);
  assert.match(await row.innerText(), /Helpdesk/);
  await shot("admin-user-created");

  // A duplicate is refused with a message, and the form keeps what was typed.
  await create.getByLabel("Username").fill("alice");
  await create.getByLabel("Display name").fill("Alice Again");
  await submit("Create user");
  await page.getByRole("alert").filter({ hasText: "already exists" }).waitFor();
  assert.equal(await create.getByLabel("Display name").inputValue(), "Alice Again");
});

test("a form post without a valid CSRF token is refused", async () => {
  const noToken = await page.request.post(`${base}/admin/users`, {
    form: { username: "mallory", display_name: "Mallory" },
    maxRedirects: 0,
  });
  assert.equal(noToken.status(), 403);
  const badToken = await page.request.post(`${base}/admin/users`, {
    form: { username: "mallory", display_name: "Mallory", csrf: "0".repeat(64) },
    maxRedirects: 0,
  });
  assert.equal(badToken.status(), 403);
  const signout = await page.request.post(`${base}/signout`, { form: {}, maxRedirects: 0 });
  assert.equal(signout.status(), 403, "even sign-out needs the token");
  await page.goto(`${base}/admin/users`);
  assert.equal(await page.locator("tbody tr", { hasText: "mallory" }).count(), 0, "nothing was created");
});

test("helpdesk console: find a user and open their page", async () => {
  await page.goto(`${base}/helpdesk`);
  await page.getByLabel("Find a user").fill("alice");
  await submit("Search");
  await review("helpdesk-search");
  await Promise.all([page.waitForNavigation(), page.getByRole("link", { name: "alice", exact: true }).click()]);
  await page.getByRole("heading", { name: "Recovery runbooks" }).waitFor();
  assert.equal(
    await page.getByRole("link", { name: "Lost or broken phone" }).getAttribute("href"),
    "/helpdesk/users/alice/cases?runbook=lost_phone"
  );
  await review("helpdesk-user");
  await page.goto(`${base}/helpdesk/users/admin`);
  assert.match(await page.locator("table", { hasText: "Authenticator app" }).innerText(), /Test phone/);
  assert.ok((await page.locator("table", { hasText: "Success" }).count()) > 0, "recent sign-ins listed");
  await review("helpdesk-admin-user");
});

test("admin console: API tokens and the audit log", async () => {
  await page.goto(`${base}/admin/tokens`);
  await page.getByLabel("Name").fill("provisioning");
  await submit("Create token");
  const token = await page.locator("#new-token").innerText();
  assert.match(token, /^lk_at_/);
  await review("admin-tokens");
  // The token works against the JSON API.
  const api = await page.request.get(`${base}/api/v1/users/alice`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(api.status(), 200);
  await submit("Revoke token provisioning");
  assert.match(await page.locator("tbody tr", { hasText: "provisioning" }).innerText(), /Revoked/);
  // A relying party's token: the only scope whose word on the end user's address and device counts.
  await page.getByLabel("Name").fill("portal");
  await page.getByLabel("Scope").selectOption("relying_party");
  await submit("Create token");
  assert.match(await page.locator("tbody tr", { hasText: "portal" }).innerText(), /relying_party/);

  await page.goto(`${base}/admin/audit`);
  assert.match(await page.locator("#chain-status").innerText(), /Chain intact/);
  assert.ok((await page.locator("table.audit tbody tr").count()) > 5);
  await review("admin-audit");
});

test("lost-device help never lowers the bar", async () => {
  await page.goto(`${base}/signin/lost`);
  await page.getByRole("heading", { name: /Lost your phone/ }).waitFor();
  assert.match(await page.locator("main").innerText(), /Temporary Access Pass/);
  await review("signin-lost-device");
});

test("next= must be a local path", async () => {
  for (const evil of ["//evil.example/", "/\\evil.example", "https://evil.example/"]) {
    await page.goto(`${base}/signin?next=${encodeURIComponent(evil)}`);
    assert.equal(new URL(page.url()).origin, new URL(base).origin, `stayed on Latchkey for ${evil}`);
    assert.equal(new URL(page.url()).pathname, "/security-info");
  }
});

test("phone width and dark mode look right", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/security-info`);
  await review("security-info-phone");
  await page.emulateMedia({ colorScheme: "dark" });
  await review("security-info-phone-dark");
  await page.setViewportSize({ width: 1100, height: 800 });
  await page.goto(`${base}/admin/users`);
  await review("admin-users-dark");
  await page.emulateMedia({ colorScheme: "light" });
});

test("no page tripped the Content-Security-Policy", () => {
  assert.deepEqual(cspViolations, []);
});

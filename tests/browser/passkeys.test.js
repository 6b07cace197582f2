// Passkeys and security keys in the web pages, in headless Chromium with the
// DevTools protocol's virtual authenticators (a platform passkey that verifies
// the user; a USB security key that only proves presence).
//
// pat gets a pass from the helpdesk (asked first), registers a passkey on
// security info, signs out, signs in without typing a username, then signs in
// to an OIDC application whose policy demands phishing resistance. The
// administrator registers a security key, falls under a policy demanding
// phishing resistance, and reaches the console with password + key. Every page
// touched is checked with axe-core and must not trip the CSP.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const http = require("node:http");
const fs = require("node:fs");
const path = require("node:path");
const { execFileSync } = require("node:child_process");
const { ROOT, BIN, ENV, startServer, stopServer, launchChromium, axeSerious } = require("./harness");

const SHOTS = path.join(ROOT, "test-output", "screenshots", "passkeys");
const PASSWORD = "correct horse battery staple";

let lk, base, browser, apiToken, admin, pat;
const cspViolations = [];
let shotNo = 0;

async function review(page, name) {
  await page.waitForLoadState("networkidle");
  assert.deepEqual(await axeSerious(page), [], `axe-core found serious/critical violations on ${name}`);
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

async function api(method, p, body) {
  const resp = await fetch(`${lk.api}/api/v1${p}`, {
    method,
    headers: { authorization: `Bearer ${apiToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  assert.ok(resp.ok, `${method} ${p} → ${resp.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A browser context with a virtual authenticator of `kind` attached to its page. */
async function newBrowser(kind) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const options =
    kind === "passkey"
      ? { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true }
      : { protocol: "ctap2", transport: "usb", hasResidentKey: false, hasUserVerification: false };
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { ...options, automaticPresenceSimulation: true },
  });
  return { context, page, cdp, authenticatorId };
}

async function credentials(who) {
  return (await who.cdp.send("WebAuthn.getCredentials", { authenticatorId: who.authenticatorId })).credentials;
}

async function signInWithPass(page, username, pass) {
  await page.goto(`${base}/signin`);
  await page.getByLabel("Username").fill(username);
  await submit(page, "Next");
  // A pass waiting, or no password at all: the pass is asked first.
  await page.getByRole("heading", { name: "Enter your Temporary Access Pass" }).waitFor();
  await page.getByLabel("Temporary Access Pass").fill(pass);
  await submit(page, "Sign in");
  assert.match(page.url(), /\/security-info$/);
}

/** Register a passkey or security key on security info. */
async function register(page, kind, name) {
  await page.getByRole("radio", { name: new RegExp(kind === "passkey" ? "^Passkey" : "^Security key") }).check();
  await page.locator("#webauthn-label").fill(name);
  await Promise.all([
    page.waitForURL(new RegExp(`done=${kind}_added$`)),
    page.getByRole("button", { name: "Add passkey or security key" }).click(),
  ]);
  const row = page.locator("tr", { hasText: name });
  assert.match(await row.innerText(), /Passkey or security key/);
}

async function signOut(page) {
  await submit(page, "Sign out");
  assert.match(page.url(), /\/signin\?signed_out=1$/);
}

/** Click "Sign in with a passkey" (the page's autofill request may already be under way). */
async function passkeyButton(page, name, urlPattern) {
  const button = page.getByRole("button", { name });
  await button.waitFor(); // shown once the script knows the browser can do WebAuthn
  // The autofill request may win the race and navigate first; the URL is what counts.
  await Promise.all([page.waitForURL(urlPattern), button.click({ timeout: 5_000 }).catch(() => {})]);
}

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  lk = await startServer("lk-passkeys-");
  base = lk.base;
  browser = await launchChromium();
  const out = execFileSync(BIN, ["admin", "api-token", "create", "--name", "t", "--data", lk.dataDir, "--json"], { env: ENV });
  apiToken = JSON.parse(out.toString()).token;
  admin = await newBrowser("security_key");
  pat = await newBrowser("passkey");
});

after(async () => {
  if (browser) await browser.close();
  await stopServer(lk);
});

test("the server names localhost and sends a browser at 127.0.0.1 there", async () => {
  assert.match(base, /^http:\/\/localhost:\d+$/);
  assert.match(lk.api, /^http:\/\/127\.0\.0\.1:\d+$/);
  await admin.page.goto(`${lk.api}/signin?next=/security-info`);
  assert.equal(new URL(admin.page.url()).origin, base);
  assert.equal(await admin.page.getByLabel("Username").getAttribute("autocomplete"), "username webauthn");
  await review(admin.page, "signin-with-passkey-button");
});

test("pat registers a passkey after signing in with a pass from the helpdesk", async () => {
  await api("POST", "/users", { username: "pat", display_name: "Pat Example" });
  const tap = await api("POST", "/users/pat/temporary-access-passes", {
    lifetime_minutes: 60,
    single_use: true,
    verification: { method: "in_person_id", note: "browser test: badge checked" },
  });
  await signInWithPass(pat.page, "pat", tap.pass);
  await review(pat.page, "security-info-add-passkey");
  await register(pat.page, "passkey", "Pat's laptop");
  await pat.page.getByText("Your passkey is registered").waitFor();
  const creds = await credentials(pat);
  assert.equal(creds.length, 1);
  assert.equal(creds[0].isResidentCredential, true, "a passkey is discoverable");
  await review(pat.page, "security-info-passkey-added");
});

test("pat signs in with the passkey without typing a username: autofill, then the button", async () => {
  // Signed out, the sign-in page asks for a passkey through autofill (conditional
  // mediation); the virtual authenticator answers it as a person picking it would.
  await Promise.all([pat.page.waitForURL(/\/security-info$/), submit(pat.page, "Sign out")]);
  let session = (await pat.context.cookies()).find((c) => c.name === "lk_session");
  assert.ok(session && session.httpOnly, "a web session for the usernameless sign-in");
  await pat.page.getByText("Pat Example").first().waitFor();

  // Without autofill (a browser that has none), the button does the same.
  await pat.context.addInitScript(() => {
    PublicKeyCredential.isConditionalMediationAvailable = async () => false;
  });
  await signOut(pat.page);
  assert.equal(await pat.page.getByLabel("Username").getAttribute("autocomplete"), "username webauthn");
  await passkeyButton(pat.page, "Sign in with a passkey", /\/security-info$/);
  session = (await pat.context.cookies()).find((c) => c.name === "lk_session");
  assert.ok(session, "signed in again");
});

test("an OIDC application that demands phishing resistance gets its code after a passkey sign-in", async () => {
  // The application's callback: a local server that records what reaches it.
  let callback = null;
  const app = http.createServer((req, res) => {
    const url = new URL(req.url, REDIRECT_URI);
    if (url.pathname === "/callback") callback = url; // not the browser's favicon request
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>Payroll</title><h1>Payroll</h1>");
  });
  await new Promise((r) => app.listen(0, "127.0.0.1", r));
  after(() => app.close());
  const REDIRECT_URI = `http://127.0.0.1:${app.address().port}/callback`;
  const client = await api("POST", "/oidc/clients", { name: "Payroll", type: "public", redirect_uris: [REDIRECT_URI] });
  await api("POST", "/policies", {
    policy: {
      id: "payroll-phishing-resistant",
      name: "Payroll needs phishing-resistant sign-in",
      state: "enabled",
      assignments: { users: { include: ["*"] }, applications: { include: [client.client_id] } },
      grant: [{ require_strength: "phishing_resistant" }],
    },
    force: true,
  });
  await signOut(pat.page);
  const verifier = crypto.randomBytes(32).toString("base64url");
  const challenge = crypto.createHash("sha256").update(verifier).digest("base64url");
  const authorize = new URL(`${lk.api}/oauth2/authorize`);
  for (const [k, v] of Object.entries({
    response_type: "code",
    client_id: client.client_id,
    redirect_uri: REDIRECT_URI,
    scope: "openid",
    state: "st-123",
    nonce: "n-456",
    code_challenge: challenge,
    code_challenge_method: "S256",
  })) authorize.searchParams.set(k, v);
  await pat.page.goto(authorize.toString());
  await pat.page.waitForURL(/\/signin\?/);
  await review(pat.page, "signin-for-oidc-app");
  await passkeyButton(pat.page, "Sign in with a passkey", (u) => u.toString().startsWith(REDIRECT_URI));
  assert.ok(callback, "the application's callback was reached");
  assert.equal(callback.searchParams.get("state"), "st-123", `${callback}`);
  assert.ok(callback.searchParams.get("code"), `a code, not an error: ${callback}`);
  assert.equal(callback.searchParams.get("error"), null);
});

test("an administrator whose policy demands phishing resistance reaches the console with a security key", async () => {
  const page = admin.page;
  await signInWithPass(page, "admin", lk.bootstrapPass);
  await register(page, "security_key", "Admin YubiKey");
  await page.getByText("Your security key is registered").waitFor();
  const creds = await credentials(admin);
  assert.equal(creds.length, 1);
  assert.equal(creds[0].isResidentCredential, false, "a security key after the password needs no resident key");
  await page.getByLabel("New password", { exact: true }).fill(PASSWORD);
  await page.getByLabel("Repeat the new password").fill(PASSWORD);
  await submit(page, "Save password");
  await api("POST", "/policies", {
    policy: {
      id: "admins-phishing-resistant",
      name: "Administrators use security keys",
      state: "enabled",
      assignments: { users: { include: ["admin"] }, applications: { include: ["*"] } },
      grant: [{ require_strength: "phishing_resistant" }],
    },
    force: true,
  });
  await signOut(page);
  await page.goto(`${base}/signin?next=/admin/users`);
  await page.getByLabel("Username").fill("admin");
  await submit(page, "Next");
  await page.getByRole("heading", { name: "Enter your password" }).waitFor();
  await page.getByLabel("Password").fill(PASSWORD);
  await submit(page, "Sign in");
  await page.getByRole("heading", { name: "Use your passkey or security key" }).waitFor();
  await review(page, "signin-security-key-step");
  await Promise.all([
    page.waitForURL((u) => u.pathname === "/admin/users"),
    page.getByRole("button", { name: "Use my passkey or security key" }).click(),
  ]);
  await page.getByRole("heading", { level: 1 }).first().waitFor();
  await review(page, "admin-console-after-security-key");
});

test("no page tripped the Content-Security-Policy", () => {
  assert.deepEqual(cspViolations, []);
});

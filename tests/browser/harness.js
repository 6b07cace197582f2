// What the browser tests share: the binary, a cheap-Argon2 environment, an
// RFC 6238 TOTP for the test's own authenticator, a `latchkey serve` on a free
// port with a fresh data directory, and Debian's headless Chromium.
"use strict";

const { spawn } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "..", "..");
const BIN = process.env.LATCHKEY_BIN || path.join(ROOT, "target", "debug", "latchkey");
const ENV = { ...process.env, LATCHKEY_ARGON2_MEMORY_KIB: "1024", LATCHKEY_ARGON2_ITERATIONS: "1", LATCHKEY_LOG: "warn" };

// ---- RFC 6238 TOTP (SHA-1, 6 digits, 30 s), enough for a test ----------------
function base32Decode(s) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0;
  const out = [];
  for (const c of s.replace(/[\s=]/g, "").toUpperCase()) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error(`not base32: ${c}`);
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}
function totp(secret, step) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = crypto.createHmac("sha1", base32Decode(secret)).update(msg).digest();
  const off = h[h.length - 1] & 0xf;
  const n = (h.readUInt32BE(off) & 0x7fffffff) % 1_000_000;
  return String(n).padStart(6, "0");
}
const stepNow = () => Math.floor(Date.now() / 1000 / 30);

/// Start `latchkey serve`; resolves to { server, base, bootstrapPass, dataDir }
/// once it listens and has printed the first administrator's pass.
function startServer(prefix) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const server = spawn(BIN, ["serve", "--data", dataDir, "--listen", "127.0.0.1:0", "--stop-on-stdin-close"], {
    stdio: ["pipe", "pipe", "pipe"],
    env: ENV,
  });
  server.stderr.on("data", (d) => process.stderr.write(`[latchkey] ${d}`));
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`server did not start; stdout so far:\n${out}`)), 60_000);
    server.stdout.on("data", (d) => {
      out += d.toString();
      const url = out.match(/listening on (http:\/\/\S+)/);
      const pass = out.match(/One-time bootstrap pass \([^)]*\): (\S+)/);
      // The pages live at localhost (passkeys refuse an IP address); the API answers at both.
      const pages = out.match(/Sign in at: (http:\/\/\S+)\/signin/);
      if (url && pass && pages) {
        clearTimeout(timer);
        resolve({ server, base: pages[1], api: url[1], bootstrapPass: pass[1], dataDir });
      }
    });
    server.on("exit", (code) => reject(new Error(`server exited early (${code}):\n${out}`)));
  });
}

/// Close stdin (the server stops itself), kill after 10 s, remove the data.
async function stopServer(s) {
  if (!s) return;
  if (s.server.exitCode === null) {
    s.server.stdin.end();
    await new Promise((r) => {
      const t = setTimeout(() => { s.server.kill("SIGKILL"); r(); }, 10_000);
      s.server.on("exit", () => { clearTimeout(t); r(); });
    });
  }
  fs.rmSync(s.dataDir, { recursive: true, force: true });
}

function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

const AXE_SOURCE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/// axe-core's serious and critical findings on the page as it is now, one line each.
async function axeSerious(page) {
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"], runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] })
  );
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

module.exports = { ROOT, BIN, ENV, totp, stepNow, startServer, stopServer, launchChromium, axeSerious };

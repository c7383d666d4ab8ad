// End-to-end test of berth's dashboard in Debian's headless chromium, driven by
// playwright-core against a real server; run by tests/dashboard.rs.
//
// Environment: BERTH_URL (a fresh server), BERTH_SETUP_CODE, BERTH_BIN (the berth
// binary, for `share` and `admin`), BERTH_DATA_DIR (the server's data directory),
// BERTH_CHROMIUM (default /usr/bin/chromium), BERTH_SCREENSHOTS (optional directory
// for PNGs of every page at 375 and 1280 px).
// Prints one line per step; exits 0 with a last line `ok` when every check passed.

import { chromium } from "playwright-core";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import readline from "node:readline";
import { spawn, spawnSync } from "node:child_process";

const PASSWORD = "correct horse battery";
const TOKEN_SHAPE = /^[0-9]+\|berth_[A-Za-z0-9]{40}$/;
/** How long any single wait may take before the step fails. */
const WAIT_MS = 30000;
const NARROW = { width: 375, height: 800 };
const WIDE = { width: 1280, height: 900 };

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const BASE = need("BERTH_URL");
const CODE = need("BERTH_SETUP_CODE");
const BIN = need("BERTH_BIN");
const DATA = need("BERTH_DATA_DIR");
const CHROMIUM = process.env.BERTH_CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.BERTH_SCREENSHOTS || "";
const ORIGIN = new URL(BASE).origin;

let current = "start";
function step(name) {
  current = name;
  console.log(`step: ${name}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Wait until `probe` returns a truthy value (polled), or fail naming `what`. */
async function until(probe, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A call to the API with a bearer token, as a script would make it. */
async function bearer(token, method, apiPath) {
  const response = await fetch(`${BASE}/api/v1${apiPath}`, {
    method, headers: { Authorization: `Bearer ${token}` },
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** A tiny local service for tunnels to forward to. */
function startService() {
  const server = http.createServer((req, res) => {
    res.setHeader("Content-Type", "text/plain");
    res.setHeader("Set-Cookie", "sid=service-session");
    res.end(`hello ${req.method} ${req.url}\n`);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** Every `berth share` started, so none outlives a failed run. */
const shares = [];

/** `berth share PORT` with a token; resolves once it printed its public URL. */
async function share(token, port) {
  const child = spawn(BIN, ["share", String(port), "--host", "127.0.0.1"], {
    env: {
      PATH: process.env.PATH, BERTH_SERVER: BASE, BERTH_TOKEN: token,
      BERTH_CONFIG: path.join(os.tmpdir(), `berth-e2e-${process.pid}-none.json`),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  shares.push(child);
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  const lines = readline.createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("berth share printed no URL")), WAIT_MS);
    lines.once("line", (line) => {
      clearTimeout(timer);
      const found = /^Forwarding (\S+)/.exec(line);
      if (found) resolve(found[1]);
      else reject(new Error(`unexpected first line from berth share: ${line}`));
    });
  });
  lines.on("line", () => {});
  return { child, url, exited };
}

/** A GET through a tunnel's public URL (Host routing on the server's port). */
function throughTunnel(publicUrl, pathAndQuery, headers) {
  const url = new URL(publicUrl);
  const server = new URL(BASE);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: server.hostname, port: server.port, path: pathAndQuery, method: "GET",
      headers: { Host: url.host, ...headers },
    }, (res) => {
      let body = "";
      res.on("data", (chunk) => { body += chunk; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Resolves with the exit code, or fails if the process is still running. */
async function exitsSoon(proc, what) {
  const code = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r("running"), WAIT_MS))]);
  check(code !== "running", `${what}: berth share is still running`);
  return code;
}

/** Every page: labelled controls, no sideways scrolling at 375 px, screenshots. */
async function checkPage(page, name) {
  const unlabelled = await page.evaluate(() => {
    const visible = (el) => el.offsetParent !== null || el.getClientRects().length > 0;
    const bad = [];
    for (const el of document.querySelectorAll("input, select, textarea, button")) {
      if (el.type === "hidden" || !visible(el)) continue;
      const named = (el.labels && el.labels.length > 0) || el.getAttribute("aria-label")
        || el.getAttribute("aria-labelledby") || (el.tagName === "BUTTON" && el.textContent.trim());
      if (!named) bad.push(el.outerHTML.slice(0, 80));
    }
    return bad;
  });
  check(unlabelled.length === 0, `${name}: controls without a label: ${unlabelled.join(", ")}`);
  await page.setViewportSize(NARROW);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 1, `${name}: at 375 px the page scrolls sideways by ${overflow} px`);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}-375.png`), fullPage: true });
  await page.setViewportSize(WIDE);
  if (SHOTS) {
    await page.screenshot({ path: path.join(SHOTS, `${name}-1280.png`), fullPage: true });
    await page.emulateMedia({ colorScheme: "dark" });
    await page.screenshot({ path: path.join(SHOTS, `${name}-1280-dark.png`), fullPage: true });
    await page.emulateMedia({ colorScheme: "light" });
  }
}

/** Confirm the open dialog after checking its question. */
async function confirm(page, mustSay) {
  const dialog = page.locator("#confirm");
  await dialog.waitFor({ state: "visible" });
  const text = await page.textContent("#confirm-text");
  check(text.includes(mustSay), `the confirmation says "${text}", not "${mustSay}"`);
  await page.click("#confirm-ok");
  await dialog.waitFor({ state: "hidden" });
}

function tokenRow(page, name) {
  return page.locator("#tokens-table tbody tr", { has: page.locator("strong", { hasText: name }) });
}

/** Submit a form and wait for the API reply to `apiPath`. */
async function submitAndWait(page, apiPath, click) {
  await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1${apiPath}`),
    page.click(click),
  ]);
}

async function setupAndSignIn(page) {
  step("setup page creates the first owner and crew");
  await page.goto(`${BASE}/setup?code=${CODE}`);
  await page.fill("#username", "alice");
  await page.fill("#crew", "home");
  await page.fill("#password", PASSWORD);
  await page.click("#setup button[type=submit]");
  await page.locator("#done").waitFor();
  check((await page.textContent("#done-crew")) === "home", "setup did not name crew home");
  await checkPage(page, "setup-done");
  await page.click("#open-dashboard");
  await page.locator("#app").waitFor();
  await page.locator("h1", { hasText: "Tokens" }).waitFor();

  step("sign out, then sign-in errors and throttling");
  await page.click("#signout");
  await page.locator("#signin").waitFor();
  await checkPage(page, "signin");
  await page.click("#signin-form button[type=submit]");
  await until(async () => (await page.textContent("#signin-error")).includes("Enter your username"), "the empty-form message");
  for (let attempt = 1; attempt <= 6; attempt += 1) {
    await page.fill("#signin-username", "mallory");
    await page.fill("#signin-password", `wrong password ${attempt}`);
    await submitAndWait(page, "/session", "#signin-form button[type=submit]");
    const expected = attempt <= 5 ? "Wrong username or password." : "Too many failed sign-ins; try again in";
    await until(async () => (await page.isVisible("#signin-error"))
      && (await page.textContent("#signin-error")).includes(expected), `"${expected}" on attempt ${attempt}`);
  }

  step("sign in");
  await page.fill("#signin-username", "alice");
  await page.fill("#signin-password", PASSWORD);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#app").waitFor();
  await page.locator("#tokens-list-title").waitFor();
  check((await page.getAttribute("nav a[data-page=tokens]", "aria-current")) === "page", "Tokens is not the current page");
}

async function createTokenErrors(page) {
  step("token form errors appear next to their controls");
  await page.click("#create-token button[type=submit]");
  await until(() => page.isVisible("#token-name-error"), "the name error");
  await page.fill("#token-name", "Bad server - test");
  await page.fill("#token-server", "ftp://nope");
  await page.click("#create-token button[type=submit]");
  await until(async () => (await page.isVisible("#token-server-error"))
    && (await page.textContent("#token-server-error")).includes("http:// or https://"), "the CLI server error");
  check((await page.getAttribute("#token-server", "aria-invalid")) === "true", "the CLI server field is not marked invalid");
  await page.fill("#token-server", "");
}

/** Create a token through the form; returns the secret read from the page. */
async function createToken(page, name, options = {}) {
  await page.fill("#token-name", name);
  if (options.redaction) await page.selectOption("#token-redaction", options.redaction);
  if (options.region) await page.fill("#token-region", options.region);
  if (options.server) await page.fill("#token-server", options.server);
  if (options.days) await page.selectOption("#token-expiry", options.days);
  await page.click("#create-token button[type=submit]");
  await page.locator("#new-token").waitFor();
  const secret = await page.inputValue("#new-token-secret");
  check(TOKEN_SHAPE.test(secret), `the page showed "${secret}", not a token`);
  check((await page.textContent("#new-token-warning")).includes("will not be shown again"), "no warning that the token is shown once");
  await tokenRow(page, name).waitFor();
  return secret;
}

async function tokensFlow(page) {
  await createTokenErrors(page);
  step("create a token with every setting; copy it; it is shown once");
  const laptop = await createToken(page, "Laptop - berth - dev",
    { redaction: "strict", region: "local", server: BASE, days: "30" });
  await checkPage(page, "tokens-created");
  await page.click("#copy-token");
  await until(async () => (await page.textContent("#new-token [role=status]")).includes("Copied"), "the Copy confirmation");
  check((await page.evaluate(() => navigator.clipboard.readText())) === laptop, "the clipboard does not hold the token");
  await page.click("#new-token button.secondary");
  await page.locator("#new-token").waitFor({ state: "hidden" });
  check(!(await page.content()).includes(laptop.split("|")[1]), "the secret is still in the page after Done");
  const badges = await tokenRow(page, "Laptop - berth - dev").textContent();
  for (const want of ["Redaction: strict", "Region: local", `Server: ${BASE}`, "never"]) {
    check(badges.includes(want), `the token row lacks "${want}": ${badges}`);
  }

  step("the token from the page works against the API");
  const me = await bearer(laptop, "GET", "/me");
  check(me.status === 200 && me.body.user.username === "alice" && me.body.token.name === "Laptop - berth - dev",
    `GET /api/v1/me with the token: ${me.status} ${JSON.stringify(me.body)}`);
  await page.reload();
  const used = tokenRow(page, "Laptop - berth - dev").locator("td[data-label='Last used'] time");
  await used.waitFor();
  check(/ago|just now/.test(await used.textContent()), "last used is not a relative time");
  check((await used.getAttribute("title")).includes(me.body.token.last_used_at || "T"), "last used has no exact time on hover");

  step("a duplicate name is refused next to the name field");
  await page.fill("#token-name", "Laptop - berth - dev");
  await page.click("#create-token button[type=submit]");
  await until(async () => (await page.isVisible("#token-name-error"))
    && (await page.textContent("#token-name-error")).includes("already have"), "the duplicate-name error");

  const deploy = await createToken(page, "CI - deploy - prod");
  await createToken(page, "CI - build - staging");
  const oldBox = await createToken(page, "Old box - scratch");
  await page.click("#new-token button.secondary");
  return { laptop, deploy, oldBox };
}

async function tunnelsFlow(page, tokens, service) {
  step("a live tunnel shows on the Tunnels page");
  const tunnel = await share(tokens.laptop, service.address().port);
  const reply = await throughTunnel(tunnel.url, "/hello?x=1", { Authorization: "Bearer not-a-real-one" });
  check(reply.status === 200 && reply.body.startsWith("hello GET /hello?x=1"), `through the tunnel: ${reply.status} ${reply.body}`);
  await page.click("nav a[data-page=tunnels]");
  const row = page.locator("#tunnels-table tbody tr", { hasText: tunnel.url });
  await row.waitFor();
  const text = await row.textContent();
  check(text.includes("alice") && text.includes("Laptop - berth - dev"), `the tunnel row lacks owner or token: ${text}`);
  check(await page.evaluate(() => document.activeElement.tagName === "H1"), "focus did not move to the page heading");
  await checkPage(page, "tunnels");
  const id = await row.getAttribute("data-tunnel-id");
  const probe = await bearer(tokens.laptop, "GET", `/tunnels/${id}/requests`);
  const inspector = !(probe.status === 404 && probe.body.error.message.startsWith("Nothing at"));
  if (inspector) {
    const count = row.locator("td[data-label=Requests]");
    await until(async () => (await count.count()) === 1 && (await count.textContent()) === "1", "a request count of 1");
  }
  await trafficFlow(page, id, inspector, tunnel);

  step("close the tunnel from the page");
  await page.click("nav a[data-page=tunnels]");
  await row.locator("button", { hasText: "Close" }).click();
  await confirm(page, tunnel.url);
  await page.locator("#no-tunnels").waitFor();
  await exitsSoon(tunnel, "after Close");
}

/** The Traffic page of tunnel `id`: real records when the server has the inspector. */
async function trafficFlow(page, id, inspector, tunnel) {
  await page.locator(`#tunnels-table tr[data-tunnel-id="${id}"] a`, { hasText: "Traffic" }).click();
  await page.locator("h1", { hasText: "Traffic" }).waitFor();
  if (!inspector) {
    step("traffic: this build has no inspector endpoint; the page says so");
    await until(async () => (await page.textContent("#main")).includes("does not record traffic yet"), "the no-inspector message");
    await checkPage(page, "traffic-unavailable");
    return;
  }
  step("traffic: the recorded request and its redacted headers");
  const request = page.locator("#requests-table tbody tr", { hasText: "/hello?x=1" });
  await request.waitFor();
  const text = await request.textContent();
  check(text.includes("GET") && text.includes("200") && text.includes("ms"), `the request row: ${text}`);
  await request.locator("button").click();
  const detail = page.locator("#request-detail");
  await detail.waitFor();
  const shown = await detail.textContent();
  check(shown.includes("Request headers") && shown.includes("Response headers"), "the detail lacks header tables");
  check(shown.includes("[REDACTED]") && !shown.includes("not-a-real-one"), "the Authorization header is not redacted");
  await checkPage(page, "traffic");

  step("traffic: a new request appears live and keyboard focus stays put");
  // The automatic refreshes say so: they must not keep an idle session alive.
  const background = page.waitForRequest(
    (r) => r.url().includes("/requests?") && r.headers()["x-berth-background"] === "1", { timeout: WAIT_MS });
  await request.locator("button").focus();
  await throughTunnel(tunnel.url, "/second", {});
  await page.locator("#requests-table tbody tr", { hasText: "/second" }).waitFor();
  check(await page.evaluate(() => document.activeElement.textContent === "/hello?x=1"), "the live refresh moved the focus");
  await background;
}

async function bulkFlow(page, tokens) {
  step("select all, then bulk Set Strict on two tokens");
  await page.click("nav a[data-page=tokens]");
  await page.locator("#tokens-table").waitFor();
  await page.check("#select-all");
  await until(async () => (await page.textContent("#bulk-count")) === "4 tokens selected", "4 tokens selected");
  await checkPage(page, "tokens-all-selected");
  await page.uncheck("#select-all");
  await page.locator("#bulk-bar").waitFor({ state: "detached" });
  for (const name of ["CI - deploy - prod", "CI - build - staging"]) {
    await tokenRow(page, name).locator("input[type=checkbox]").check();
  }
  await until(async () => (await page.textContent("#bulk-count")) === "2 tokens selected", "2 tokens selected");
  await page.click("#bulk-strict");
  await confirm(page, "2 tokens");
  await until(async () => (await page.textContent("#list-result")).includes("2 updated"), "the bulk result");
  for (const name of ["CI - deploy - prod", "CI - build - staging"]) {
    check((await tokenRow(page, name).textContent()).includes("Redaction: strict"), `${name} is not strict`);
  }
  const deployId = Number(tokens.deploy.split("|")[0]);
  const strict = await bearer(tokens.laptop, "GET", `/tokens/${deployId}`);
  check(strict.body.redaction === "strict", `the API says ${strict.body.redaction} after Set Strict`);

  step("bulk Delete two tokens");
  for (const name of ["CI - deploy - prod", "CI - build - staging"]) {
    await tokenRow(page, name).locator("input[type=checkbox]").check();
  }
  await page.click("#bulk-delete");
  await confirm(page, "Delete 2 tokens");
  await tokenRow(page, "CI - deploy - prod").waitFor({ state: "detached" });
  await tokenRow(page, "CI - build - staging").waitFor({ state: "detached" });
  check((await bearer(tokens.deploy, "GET", "/me")).status === 401, "a deleted token still works");
  await page.check("#show-inactive");
  check((await tokenRow(page, "CI - deploy - prod").textContent()).includes("revoked"), "the deleted token is not listed as revoked");
  await page.uncheck("#show-inactive");
}

async function revokeFlow(page, tokens, service) {
  step("Revoke and disconnect closes the token's live tunnel");
  const tunnel = await share(tokens.oldBox, service.address().port);
  await tokenRow(page, "Old box - scratch").locator("button", { hasText: "Revoke and disconnect" }).click();
  await confirm(page, "Old box - scratch");
  await tokenRow(page, "Old box - scratch").waitFor({ state: "detached" });
  await until(async () => (await page.textContent("#list-result")).includes("Live tunnels closed: 1"), "the closed-tunnel count");
  check(await page.evaluate(() => document.activeElement.id === "tokens-list-title"), "focus is lost after a revoke");
  await exitsSoon(tunnel, "after Revoke and disconnect");

  step("Revoke a token");
  await tokenRow(page, "Laptop - berth - dev").locator("button", { hasText: /^Revoke$/ }).click();
  await confirm(page, "Laptop - berth - dev");
  await page.locator("#no-tokens").waitFor();
  check((await bearer(tokens.laptop, "GET", "/me")).status === 401, "a revoked token still works");
  await checkPage(page, "tokens-empty");
}

async function crewFlow(page) {
  step("crew: add a member, change the role, default redaction");
  const made = spawnSync(BIN, ["admin", "create-user", "bob", "--crew", "elsewhere", "--role", "owner",
    "--password-stdin", "--data", DATA], { input: PASSWORD, encoding: "utf8" });
  check(made.status === 0, `berth admin create-user bob: ${made.stderr}`);
  await page.click("nav a[data-page=crew]");
  await page.locator("#members-table tr[data-user=alice]").waitFor();
  check((await page.textContent("#members-table tr[data-user=alice]")).includes("owner"), "alice is not shown as owner");
  await page.fill("#member-username", "ghost");
  await page.click("#add-member button[type=submit]");
  await until(async () => (await page.isVisible("#member-username-error"))
    || (await page.isVisible("#add-member > .error")), "the unknown-user error");
  await page.fill("#member-username", "bob");
  await page.click("#add-member button[type=submit]");
  const bob = page.locator("#members-table tr[data-user=bob]");
  await bob.waitFor();
  const roleSelect = bob.locator("select");
  check((await roleSelect.inputValue()) === "member", "bob was not added as member");
  await Promise.all([
    page.waitForResponse((r) => r.request().method() === "PATCH" && r.status() === 200),
    roleSelect.selectOption("admin"),
  ]);
  await page.reload();
  await until(async () => (await page.locator("#members-table tr[data-user=bob] select").inputValue()) === "admin", "bob's new role");
  await page.selectOption("#crew-redaction", "strict");
  await page.click("#crew-settings button[type=submit]");
  await until(async () => (await page.textContent("#crew-settings [role=status]")).includes("strict"), "the saved tier");
  step("crew: reserve a subdomain, refuse a reserved one, release it");
  await page.fill("#subdomain-name", "www");
  await page.click("#reserve-subdomain button[type=submit]");
  await until(async () => (await page.isVisible("#subdomain-name-error"))
    || (await page.isVisible("#reserve-subdomain > .error")), "the reserved-name error");
  await page.fill("#subdomain-name", "shop");
  await page.click("#reserve-subdomain button[type=submit]");
  const shop = page.locator("#subdomains-table tr[data-subdomain=shop]");
  await shop.waitFor();
  check((await shop.textContent()).includes("reserved"), "shop is not shown as reserved");
  await checkPage(page, "crew");
  await shop.locator("button", { hasText: "Release" }).click();
  await confirm(page, "shop");
  await until(async () => !(await page.isVisible("#subdomains-table tr[data-subdomain=shop]")), "shop released");
}

async function auditFlow(page) {
  step("audit lists the crew's events");
  await page.click("nav a[data-page=audit]");
  await page.locator("#audit-table").waitFor();
  const text = await page.textContent("#audit-table");
  for (const action of ["setup", "session.create", "token.create", "token.revoke", "tunnel.open", "member.add", "crew.update", "subdomain.reserve", "subdomain.release"]) {
    check(text.includes(action), `the audit page lacks ${action}`);
  }
  await checkPage(page, "audit");
}

async function keyboardFlow(page) {
  step("keyboard: skip link first, visible focus, nav by Enter");
  await page.goto(`${BASE}/#/tokens`);
  await page.reload();
  await page.locator("#tokens-list-title").waitFor();
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.classList.contains("skip")), "the first Tab does not reach the skip link");
  await page.keyboard.press("Tab");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== "none", "the focused control has no visible outline");
  await page.focus("nav a[data-page=audit]");
  await page.keyboard.press("Enter");
  await page.locator("#audit-table").waitFor();
  check(await page.evaluate(() => document.activeElement.textContent === "Audit"), "focus did not land on the Audit heading");
}

async function adminFlow(browser, problems) {
  step("an admin of one crew and owner of another: crew picker and what the role allows");
  const context = await browser.newContext({ viewport: WIDE });
  const page = await watchedPage(context, problems);
  await page.goto(`${BASE}/#/crew`);
  await page.fill("#signin-username", "bob");
  await page.fill("#signin-password", PASSWORD);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#app").waitFor();
  const options = await page.locator("#crew-picker option").allTextContents();
  check(options.includes("home (admin)") && options.includes("elsewhere (owner)"), `the crew picker offers ${options}`);
  await page.selectOption("#crew-picker", { label: "home (admin)" });
  await page.locator("h1", { hasText: "Crew home" }).waitFor();
  await page.locator("#members-table tr[data-user=alice]").waitFor();
  check(await page.isDisabled("#crew-redaction"), "an admin can change the crew's default redaction");
  check((await page.locator("#members-table tr[data-user=alice] select").count()) === 0, "an admin can change an owner's role");
  check(!(await page.locator("#member-role option").allTextContents()).includes("owner"), "an admin can make owners");
  await page.click("nav a[data-page=tokens]");
  await page.locator("#tokens-list-title", { hasText: "Every token of crew home" }).waitFor();
  await page.selectOption("#crew-picker", { label: "elsewhere (owner)" });
  await page.locator("#tokens-list-title", { hasText: "Every token of crew elsewhere" }).waitFor();
  check((await page.inputValue("#token-crew")) === (await page.inputValue("#crew-picker")), "the create form does not default to the chosen crew");
  await context.close();
}

async function everywhereFlow(browser, problems) {
  step("sign out everywhere ends the account's sessions in other browsers too");
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const context = await browser.newContext({ viewport: WIDE });
    const page = await watchedPage(context, problems);
    await page.goto(`${BASE}/#/tokens`);
    await page.fill("#signin-username", "bob");
    await page.fill("#signin-password", PASSWORD);
    await page.click("#signin-form button[type=submit]");
    await page.locator("#app").waitFor();
    pages.push(page);
  }
  await pages[0].click("#signout-all");
  await pages[0].locator("#signin").waitFor();
  const status = await pages[1].evaluate(async () => (await fetch("/api/v1/me")).status);
  check(status === 401, `after signing out everywhere, another browser's /api/v1/me answers ${status}`);
  for (const page of pages) await page.context().close();

  step("changing the password can revoke every token, and keeps this tab signed in");
  const context = await browser.newContext({ viewport: WIDE });
  const page = await watchedPage(context, problems);
  await page.goto(`${BASE}/#/tokens`);
  await page.fill("#signin-username", "bob");
  await page.fill("#signin-password", PASSWORD);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#app").waitFor();
  const token = await page.evaluate(async () => {
    const me = await (await fetch("/api/v1/me")).json();
    const reply = await fetch("/api/v1/tokens", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": me.csrf_token },
      body: JSON.stringify({ name: "bob - before the change" }),
    });
    return (await reply.json()).secret;
  });
  check(TOKEN_SHAPE.test(token || ""), `bob could not make a token: ${token}`);
  await page.click("#password-open");
  await page.fill("#password-current", "wrong password");
  await page.fill("#password-new", "a new password for bob");
  await page.click("#password-form button[type=submit]");
  await until(async () => (await page.textContent("#password-error")).includes("Wrong username or password"), "the wrong-password message");
  await page.fill("#password-current", PASSWORD);
  await page.check("#password-revoke");
  await page.click("#password-form button[type=submit]");
  await until(async () => (await page.textContent("#password-done")).includes("1 token(s) revoked"), "the password-changed message");
  await page.click("#password-cancel");
  const [meStatus, tokenStatus] = await page.evaluate(async (t) => [
    (await fetch("/api/v1/me")).status,
    (await fetch("/api/v1/me", { headers: { Authorization: `Bearer ${t}` } })).status,
  ], token);
  check(meStatus === 200, `after changing the password this tab's session answers ${meStatus}`);
  check(tokenStatus === 401, `a token from before the change still answers ${tokenStatus}`);
  await context.close();
}

async function signOutFlow(page) {
  step("sign out ends the session");
  await page.click("#signout");
  await page.locator("#signin").waitFor();
  const status = await page.evaluate(async () => (await fetch("/api/v1/me")).status);
  check(status === 401, `after sign-out /api/v1/me answers ${status}`);
}

/** A page whose script errors, CSP refusals and requests to other origins are noted. */
async function watchedPage(context, problems) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (err) => problems.push(`script error: ${err.message}`));
  page.on("console", (msg) => {
    if (/Content.Security.Policy|Refused to/i.test(msg.text())) problems.push(`CSP: ${msg.text()}`);
  });
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (url.protocol.startsWith("http") && url.origin !== ORIGIN) problems.push(`request to another origin: ${req.url()}`);
  });
  return page;
}

/** What the page on screen says, for a failure message. */
async function visibleText(browser) {
  try {
    const [page] = browser.contexts().flatMap((c) => c.pages());
    return page ? `${page.url()}: ${(await page.innerText("body")).replace(/\s+/g, " ").slice(0, 600)}` : "";
  } catch (err) {
    return "";
  }
}

async function main() {
  if (SHOTS) fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  const problems = [];
  const service = await startService();
  try {
    const context = await browser.newContext({ viewport: WIDE });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: ORIGIN });
    const page = await watchedPage(context, problems);
    await setupAndSignIn(page);
    const tokens = await tokensFlow(page);
    await tunnelsFlow(page, tokens, service);
    await bulkFlow(page, tokens);
    await revokeFlow(page, tokens, service);
    await crewFlow(page);
    await auditFlow(page);
    await keyboardFlow(page);
    await signOutFlow(page);
    await adminFlow(browser, problems);
    await everywhereFlow(browser, problems);
    check(problems.length === 0, problems.join("; "));
  } catch (err) {
    if (problems.length) err.message += ` (the page also reported: ${problems.join("; ")})`;
    const shown = await visibleText(browser);
    if (shown) err.message += `\nthe page showed: ${shown}`;
    throw err;
  } finally {
    for (const child of shares) {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    }
    service.close();
    await browser.close();
  }
  console.log("ok");
}

main().catch((err) => {
  console.error(`dashboard e2e failed at step "${current}": ${err.message}`);
  process.exit(1);
});

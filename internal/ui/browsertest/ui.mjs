// Drives Debian's chromium through the Millrace web UI. Run by the Go test
// TestUIInBrowser (internal/ui), which starts the server and the worker and
// checks what this script reports against the store.
//
// Env: BASE_URL (the server), TOKEN (an API token; empty when auth is off),
// SCREENSHOT_DIR, QUICK_PATH and LONG_PATH (registered playbooks: one that
// runs until the file its payload's gate names exists, one that sleeps),
// PROJECT (a project for SQL), VIEWER_TOKEN (signs in as a viewer too),
// OIDC=1 (try SSO), REQUIRE_SSE=1 to fail unless the pages were live
// through SSE.
// Prints one JSON line: {"quick_id", "second_id", "long_id", "sso", "live"}.
import { chromium } from "playwright-core";
import path from "node:path";
import fs from "node:fs";
import os from "node:os";

const env = (k, d) => process.env[k] ?? d;
const BASE = env("BASE_URL").replace(/\/$/, "");
const TOKEN = env("TOKEN", "");
const SHOTS = env("SCREENSHOT_DIR", "screenshots");
const QUICK = env("QUICK_PATH");
const LONG = env("LONG_PATH");
const PROJECT = env("PROJECT");
const REQUIRE_SSE = env("REQUIRE_SSE", "") === "1";
const T = 30_000;

fs.mkdirSync(SHOTS, { recursive: true });
const GATES = fs.mkdtempSync(path.join(os.tmpdir(), "millrace-ui-gates-"));
const log = (...a) => console.error("[ui.mjs]", ...a);

const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const out = { live: {} };
let page;
try {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  page = await ctx.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    log("console:", m.text());
    if (m.text().includes("Content Security Policy")) problems.push(`CSP violation: ${m.text()}`);
  });
  const shot = async (name) => { await page.screenshot({ path: path.join(SHOTS, name), fullPage: true }); log("screenshot", name); };

  // 1. Sign in with the API token (the page swaps it for a session cookie).
  await page.goto(`${BASE}/ui/`);
  if (TOKEN) {
    await page.waitForSelector("#login-form", { timeout: T });
    await page.fill("#token", "mrt_not_a_real_token");
    await page.click("#login");
    await page.waitForFunction(() => document.querySelector("#login-error")?.textContent.includes("not accepted"), null, { timeout: T });
    await page.fill("#token", TOKEN);
    await shot("01-login.png");
    await page.click("#login");
    await page.waitForSelector("#whoami", { timeout: T });
    const cookies = await ctx.cookies();
    const c = cookies.find((x) => x.name === "millrace_session");
    if (!c || !c.httpOnly) throw new Error(`after login, want an HttpOnly millrace_session cookie; have ${JSON.stringify(cookies.map((x) => x.name))}`);
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    if (stored.includes(TOKEN)) throw new Error("the page stored the API token in web storage");
  }
  await page.waitForSelector("#executions", { state: "attached", timeout: T });

  // 2. Start an execution from the catalog; watch it complete without a
  // reload: a marker set on window before the run must survive.
  await page.goto(`${BASE}/ui/#/catalog/${QUICK}`);
  await page.waitForSelector("#run", { timeout: T });
  // The quick playbook waits until its gate file exists (see the Go
  // test): the page must show it running before this script opens the gate.
  const gate1 = path.join(GATES, "first");
  await page.fill("#payload", JSON.stringify({ gate: gate1 }));
  await page.evaluate(() => { window.__noReload = "still here"; });
  await page.click("#run");
  await page.waitForFunction(() => /^#\/executions\/\d+$/.test(location.hash), null, { timeout: T });
  out.quick_id = (await page.textContent("#execution-id")).trim();
  await page.waitForSelector('#status [data-status="running"]', { timeout: T });
  await page.waitForSelector('#graph g.node[data-step="start"][data-status="running"]', { timeout: T });
  fs.writeFileSync(gate1, "open");
  await page.waitForSelector('#status [data-status="completed"]', { timeout: 60_000 });
  await page.waitForSelector('#graph g.node[data-step="start"][data-status="completed"]', { timeout: T });
  await page.waitForSelector("#result-json", { timeout: T });
  if (await page.evaluate(() => window.__noReload) !== "still here") throw new Error("the page reloaded while the execution ran");
  out.live.execution = await page.getAttribute("#live", "data-live");
  const hashId = (await page.evaluate(() => location.hash)).split("/").pop();
  if (hashId !== out.quick_id) throw new Error(`execution id in the URL ${hashId} != shown ${out.quick_id}`);
  await shot("02-execution-completed.png");

  // 3. The executions list shows it, with a live feed.
  await page.click('nav a[data-nav="executions"]');
  await page.waitForSelector(`#executions tr[data-execution="${out.quick_id}"][data-status="completed"]`, { timeout: T });
  await page.waitForFunction(() => ["on", "fallback"].includes(document.querySelector("#live")?.dataset.live), null, { timeout: T });
  out.live.list = await page.getAttribute("#live", "data-live");
  // Another tab starts an execution: this list shows it arrive and end,
  // without a reload.
  const shown = Number((await page.textContent("#count")).split(" ")[0]);
  await page.evaluate(() => { window.__noReload = "list"; });
  const tab = await ctx.newPage();
  await tab.goto(`${BASE}/ui/#/catalog/${QUICK}`);
  await tab.waitForSelector("#run", { timeout: T });
  const gate2 = path.join(GATES, "second");
  await tab.fill("#payload", JSON.stringify({ gate: gate2 }));
  await tab.click("#run");
  await tab.waitForFunction(() => /^#\/executions\/\d+$/.test(location.hash), null, { timeout: T });
  out.second_id = (await tab.textContent("#execution-id")).trim();
  await page.waitForSelector(`#executions tr[data-execution="${out.second_id}"][data-status="running"]`, { timeout: T });
  fs.writeFileSync(gate2, "open");
  await page.waitForSelector(`#executions tr[data-execution="${out.second_id}"][data-status="completed"]`, { timeout: 60_000 });
  await tab.close();
  await page.waitForFunction((n) => document.querySelector("#count")?.textContent.startsWith(`${n} shown of ${n}`), shown + 1, { timeout: T });
  if (await page.evaluate(() => window.__noReload) !== "list") throw new Error("the executions list reloaded");
  await shot("03-executions.png");

  // 4. A long execution: cancel it while its shell step sleeps.
  await page.goto(`${BASE}/ui/#/catalog/${LONG}`);
  await page.waitForSelector("#run", { timeout: T });
  await page.click("#run");
  await page.waitForFunction(() => /^#\/executions\/\d+$/.test(location.hash), null, { timeout: T });
  out.long_id = (await page.textContent("#execution-id")).trim();
  await page.waitForSelector('#graph g.node[data-step="start"][data-status="running"]', { timeout: 60_000 });
  await shot("04-execution-running.png");
  await page.click("#cancel");
  await page.waitForSelector('#status [data-status="cancelled"]', { timeout: T });
  await page.waitForSelector('#graph g.node[data-step="start"][data-status="cancelled"]', { timeout: T });
  await shot("05-execution-cancelled.png");
  // The list's filters: by status, then by playbook.
  await page.click('nav a[data-nav="executions"]');
  await page.waitForSelector(`#executions tr[data-execution="${out.long_id}"][data-status="cancelled"]`, { timeout: T });
  await page.selectOption("#filter-status", "completed");
  await page.waitForSelector(`#executions tr[data-execution="${out.long_id}"]`, { state: "detached", timeout: T });
  await page.waitForSelector(`#executions tr[data-execution="${out.quick_id}"]`, { timeout: T });
  // The filter holds for live updates too: an execution started elsewhere
  // is not added to the completed list while it runs, and arrives when it
  // completes.
  const third = await ctx.newPage();
  await third.goto(`${BASE}/ui/#/catalog/${QUICK}`);
  await third.waitForSelector("#run", { timeout: T });
  const gate3 = path.join(GATES, "third");
  await third.fill("#payload", JSON.stringify({ gate: gate3 }));
  await third.click("#run");
  await third.waitForFunction(() => /^#\/executions\/\d+$/.test(location.hash), null, { timeout: T });
  const thirdId = (await third.textContent("#execution-id")).trim();
  await page.waitForTimeout(1500);
  if (await page.$(`#executions tr[data-execution="${thirdId}"]`)) throw new Error("a running execution was added to the list of completed ones");
  fs.writeFileSync(gate3, "open");
  await page.waitForSelector(`#executions tr[data-execution="${thirdId}"][data-status="completed"]`, { timeout: 60_000 });
  await third.close();
  // The server filtered: the total counts completed executions only (the
  // cancelled one is not in it), all of them on this page.
  await page.waitForFunction(() => /^(\d+) shown of \1$/.test(document.querySelector("#count")?.textContent || ""), null, { timeout: T });
  await page.selectOption("#filter-status", "");
  await page.fill("#filter-playbook", LONG);
  await page.press("#filter-playbook", "Enter");
  await page.waitForSelector(`#executions tr[data-execution="${out.quick_id}"]`, { state: "detached", timeout: T });
  await page.waitForSelector(`#executions tr[data-execution="${out.long_id}"]`, { timeout: T });

  // 5. A SQL query of 250 rows, paged 100 at a time to the last page.
  await page.goto(`${BASE}/ui/#/queries?project=${encodeURIComponent(PROJECT)}`);
  await page.waitForSelector("#sql", { timeout: T });
  await page.fill("#sql", "select n, n * 2 as twice from generate_series(1, 250) as n order by n");
  await page.click("#run-sql");
  await page.waitForSelector('#page-info[data-page="1"][data-pages="3"]', { timeout: 60_000 });
  const firstCell = async () => (await page.textContent("#results tbody tr:first-child td:first-child")).trim();
  if (await firstCell() !== "1") throw new Error(`page 1 starts at ${await firstCell()}`);
  await page.click("#next-page");
  await page.waitForSelector('#page-info[data-page="2"]', { timeout: T });
  if (await firstCell() !== "101") throw new Error(`page 2 starts at ${await firstCell()}`);
  await page.click("#next-page");
  await page.waitForSelector('#page-info[data-page="3"]', { timeout: T });
  const rows = await page.$$eval("#results tbody tr", (r) => r.length);
  if (await firstCell() !== "201" || rows !== 50) throw new Error(`page 3: first ${await firstCell()}, ${rows} rows; want 201 and 50`);
  if (!(await page.isDisabled("#next-page"))) throw new Error("next is enabled on the last page");
  await shot("06-query-last-page.png");
  await page.click("#prev-page");
  await page.waitForSelector('#page-info[data-page="2"]', { timeout: T });

  // 6. The other pages render.
  await page.click('nav a[data-nav="queries"]');
  await page.waitForSelector("#history tbody tr", { timeout: T });
  await shot("07-query-history.png");
  await page.click('nav a[data-nav="streams"]');
  await page.waitForSelector("#outbox", { timeout: T });
  await page.waitForSelector("[data-stream] [data-consumer]", { timeout: T });
  await shot("08-workers-streams.png");
  await page.click('nav a[data-nav="credentials"]');
  await page.waitForSelector("#credentials tbody tr", { timeout: T });
  await shot("09-credentials.png");
  await page.goto(`${BASE}/ui/#/catalog/${LONG}`);
  await page.waitForSelector("#source", { timeout: T });
  await shot("10-catalog.png");

  // 7. Sign out, then in as a viewer: the same pages without the buttons
  // that change anything.
  const VIEWER = env("VIEWER_TOKEN", "");
  if (TOKEN && VIEWER) {
    await page.click("#who button");
    await page.waitForSelector("#login-form", { timeout: T });
    if ((await ctx.cookies()).some((c) => c.name === "millrace_session" && c.value)) throw new Error("the session cookie outlived sign-out");
    await page.fill("#token", VIEWER);
    await page.click("#login");
    await page.waitForSelector('#whoami[data-role="viewer"]', { timeout: T });
    await page.goto(`${BASE}/ui/#/executions/${out.quick_id}`);
    await page.waitForSelector('#status [data-status="completed"]', { timeout: T });
    if (await page.$("#rerun")) throw new Error("a viewer is offered Re-run");
    await page.goto(`${BASE}/ui/#/catalog/${LONG}`);
    await page.waitForSelector("#source", { timeout: T });
    if (await page.$("#run")) throw new Error("a viewer is offered Run");
    await page.goto(`${BASE}/ui/#/queries?project=${encodeURIComponent(PROJECT)}`);
    await page.waitForSelector("#history tbody tr", { timeout: T });
    if (await page.$("#run-sql")) throw new Error("a viewer is offered a new SQL query");
    await shot("11-viewer.png");
  }

  // 8. Single sign-on: the issuer (the Go test's) signs in an operator
  // and sends the browser back with an id_token the server verifies.
  if (env("OIDC", "") === "1") {
    await page.click("#who button");
    await page.waitForSelector("#sso", { timeout: T });
    if (await page.isVisible("#nav")) throw new Error("the navigation shows while signed out");
    await shot("12-login-sso.png");
    await page.click("#sso");
    await page.waitForSelector('#whoami[data-role="operator"]', { timeout: T });
    const who = await page.textContent("#whoami");
    if (!who.includes("Ada") && !who.includes("ada@example.com")) throw new Error(`signed in by SSO as ${who}`);
    if ((await page.evaluate(() => location.hash)).includes("id_token")) throw new Error("the id_token stayed in the URL");
    out.sso = who.trim();
  }

  if (problems.length) throw new Error(problems.join("; "));
  if (REQUIRE_SSE && (out.live.execution !== "ended" || out.live.list !== "on")) {
    throw new Error(`want live updates through SSE; the execution page was ${out.live.execution}, the list ${out.live.list}`);
  }
  console.log(JSON.stringify(out));
} catch (e) {
  if (page) await page.screenshot({ path: path.join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
  console.error(`[ui.mjs] FAILED: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  fs.rmSync(GATES, { recursive: true, force: true });
  await browser.close();
}

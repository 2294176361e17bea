// Drives the web app in headless Chromium (playwright-core, Debian's /usr/bin/chromium) the way
// a person would: picks every switching path, level and a few alphas, draws on the pad, turns
// on auto mode and simulates pressure, loads broken bundles; records what the page computed.
// Used by tests/test_web_app.py, which compares the logits with PyTorch's.
//
//   node e2e/browser-check.mjs CONFIG.json RESULT.json
// CONFIG: {url, alphas: [..], screenshots: DIR, userDataDir: DIR, badBundles: {name: "dir/"},
//          chromium?: "/usr/bin/chromium", switchRepeats?: 3, benchRuns?: 20}

import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [configPath, resultPath] = process.argv.slice(2);
const config = JSON.parse(await readFile(configPath, "utf8"));
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const context = await chromium.launchPersistentContext(config.userDataDir, {
  executablePath: config.chromium ?? "/usr/bin/chromium", headless: true, args: FLAGS,
  viewport: { width: 1200, height: 900 },
});
const result = { console_errors: [], runs: [], switch_costs: {}, latency: {}, auto: {}, bad_bundles: {} };
try {
  const page = await context.newPage();
  page.on("console", (message) => { if (message.type() === "error") result.console_errors.push(message.text()); });
  page.on("pageerror", (error) => result.console_errors.push(String(error)));
  const idle = () => page.evaluate(() => window.lcsApp.idle());
  const waitReady = () => page.waitForSelector("body[data-state=ready], body[data-state=error]", { timeout: 60000 });
  const lastRun = () => page.evaluate(() => JSON.parse(JSON.stringify({ ...window.lcsApp.lastRun, drawn: window.lcsApp.lastDrawn })));

  await page.goto(`${config.url}?budget=1000&dwellDownMs=300&dwellUpMs=1500`);
  await waitReady();
  if (await page.getAttribute("body", "data-state") === "error") {
    throw new Error(`the app refused the bundle: ${await page.textContent("#error")}`);
  }
  result.paths = await page.$$eval("#path option", (options) => options.map((o) => o.value));
  result.levels = await page.evaluate(() => window.lcsApp.manifest.levels.map((l) => l.alpha));

  // Strokes on the pad, as a user would draw a "7".
  const drawSeven = async () => {
    const pad = await page.locator("#pad").boundingBox();
    const at = (fx, fy) => [pad.x + pad.width * fx, pad.y + pad.height * fy];
    await page.mouse.move(...at(0.25, 0.2));
    await page.mouse.down();
    for (let step = 1; step <= 8; step++) await page.mouse.move(...at(0.25 + 0.0625 * step, 0.2));
    for (let step = 1; step <= 10; step++) await page.mouse.move(...at(0.75 - 0.03 * step, 0.2 + 0.065 * step));
    await page.mouse.up();
    await idle();
  };
  await drawSeven();
  result.drawn_input = await page.evaluate(() => Array.from(window.lcsApp.drawn));

  // Every path at every level, and the alpha paths at in-between alphas too.
  for (const path of result.paths) {
    await page.selectOption("#path", path);
    await idle();
    for (let level = 0; level < result.levels.length; level++) {
      await page.selectOption("#level", String(level));
      await idle();
      result.runs.push(await lastRun());
    }
    if (path !== "levels") {
      for (const alpha of config.alphas) {
        await page.locator("#alpha").fill(String(alpha));
        await idle();
        result.runs.push(await lastRun());
      }
    }
  }

  // Switch cost, both ways, between the most accurate and the cheapest level.
  const last = String(result.levels.length - 1);
  for (const path of result.paths) {
    await page.selectOption("#path", path);
    await page.selectOption("#level", "0");
    await idle();
    const before = await page.evaluate(() => window.lcsApp.switches.length);
    for (let i = 0; i < (config.switchRepeats ?? 3); i++) {
      for (const level of [last, "0"]) {
        await page.selectOption("#level", level);
        await idle();
      }
    }
    result.switch_costs[path] = await page.evaluate((from) => window.lcsApp.switches.slice(from), before);
    // Latency per level: the page's own timing of batch-1 inferences of one sample.
    result.latency[path] = [];
    for (let level = 0; level < result.levels.length; level++) {
      await page.selectOption("#level", String(level));
      await idle();
      result.latency[path].push(await page.evaluate(async (runs) => {
        const app = window.lcsApp;
        const input = Float32Array.from(app.manifest.samples.images[0].flat(2));
        await app.engine.run(input); // warm-up: the first call after a switch pays one-off costs
        const times = [];
        for (let i = 0; i < runs; i++) times.push((await app.engine.run(input)).ms);
        return times;
      }, config.benchRuns ?? 20));
    }
  }

  // Auto mode: pressure moves it to a cheaper level, the end of pressure brings it back.
  // A fresh page, so the chart in the screenshots shows only this.
  await page.reload();
  await waitReady();
  await drawSeven();
  await page.selectOption("#path", "levels");
  await page.selectOption("#level", "0");
  await idle();
  await page.check("#auto");
  await page.waitForFunction(() => window.lcsApp.decisions.length >= 3, null, { timeout: 20000 });
  result.auto.level_before = await page.getAttribute("body", "data-level");
  await page.selectOption("#pressure", "thermal-critical");
  await page.waitForFunction(() => document.body.dataset.level !== "0", null, { timeout: 20000 });
  result.auto.level_under_pressure = await page.getAttribute("body", "data-level");
  await page.waitForTimeout(1000); // let the chart show the lower level for a moment
  await page.screenshot({ path: join(config.screenshots, `web-app-level-${result.auto.level_under_pressure}-pressure.png`), fullPage: true });
  result.auto.policy_text_under_pressure = await page.textContent("#policy");
  await page.selectOption("#pressure", "off");
  await page.waitForFunction(() => document.body.dataset.level === "0", null, { timeout: 20000 });
  result.auto.level_after = await page.getAttribute("body", "data-level");
  await page.waitForTimeout(1000);
  await page.screenshot({ path: join(config.screenshots, "web-app-level-0.png"), fullPage: true });
  result.auto.policy_text_after = await page.textContent("#policy");
  await page.uncheck("#auto");
  await idle();
  result.auto.decisions = await page.evaluate(() => window.lcsApp.decisions);
  result.auto.switches = await page.evaluate(() => window.lcsApp.switches.slice(-4));

  // Broken bundles: the page must say what is wrong, on screen.
  for (const [name, directory] of Object.entries(config.badBundles ?? {})) {
    const bad = await context.newPage();
    await bad.goto(`${config.url}?bundle=${directory}`);
    await bad.waitForSelector("body[data-state=error], body[data-state=ready]", { timeout: 30000 });
    result.bad_bundles[name] = {
      state: await bad.getAttribute("body", "data-state"),
      message: await bad.textContent("#error-message"),
      hint: await bad.textContent("#error-hint"),
    };
    await bad.close();
  }
} catch (error) {
  result.error = String(error.stack || error);
} finally {
  await context.close();
  await writeFile(resultPath, JSON.stringify(result, null, 1));
}
process.exit(result.error ? 1 : 0);

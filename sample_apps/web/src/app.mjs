// The page: load and check the bundle, show its samples and a drawing pad with predictions
// and latency, let the user (or the shared level policy, in auto mode) change level.
//
// URL parameters (all optional): bundle=DIR/ (default ./bundle/), budget=MS, and any numeric
// field of the policy (e.g. dwellUpMs=1500) to shorten its dwell times for a demo.

import { BundleError, alphaLevels, loadBundle, makeSchemaValidator, sampleLogitsAt, switchingPaths } from "./bundle.mjs";
import { Engine } from "./engine.mjs";
import { LiveChart } from "./chart.mjs";
import { argmax, denormalise, flattenSample, imageShape, intensitiesFromRgba, normalise, softmax } from "./preprocess.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PATH_LABELS = {
  levels: "level files (open another session)",
  switch_once: "switch-once (alpha_weights → alpha_predict)",
  alpha_input: "alpha input (alpha fed every call)",
};
const PRESSURES = {
  off: {},
  "thermal-serious": { thermal: "serious" },
  "thermal-critical": { thermal: "critical" },
  "battery-low": { batteryFraction: 0.08, charging: false },
  "low-power": { lowPowerMode: true },
};
/** How often auto mode runs an inference and asks the policy (ms). */
const AUTO_TICK_MS = 200;
/** Inferences in the moving latency statistic (median: one slow call does not move it). */
const LATENCY_WINDOW = 8;

/** State the tests read (window.lcsApp) and the UI shows. */
const app = {
  manifest: null,
  engine: null,
  levels: [], // {alpha, cost}: what the picker and the policy choose among
  choice: null, // {path, alpha, level}
  lastRun: null,
  switches: [],
  decisions: [],
  recentMs: [],
  drawn: null, // preprocessed drawn image, or null
  tickQueued: false,
  queue: Promise.resolve(),
  /** Resolves when every queued switch and inference has finished. */
  idle() { return this.queue; },
};
window.lcsApp = app;

/** Run `task` after everything queued before it: switches and inferences never interleave. */
function enqueue(task) {
  app.queue = app.queue.then(task).catch(showError);
  return app.queue;
}

function showError(error) {
  $("error").hidden = false;
  $("error-message").textContent = error.message;
  $("error-hint").textContent = error instanceof BundleError
    ? `Fix: ${error.hint}` : "Fix: reload the page; if it happens again, re-export the bundle.";
  document.body.dataset.state = "error";
  console.error(error);
}

async function main() {
  const Ajv2020 = window.ajv2020 && window.ajv2020.default;
  if (!Ajv2020) {
    throw new BundleError("the JSON Schema validator (vendor/ajv/ajv2020.min.js) did not load",
      "lay the app out with lcs-export app BUNDLE --platform web -o DIR");
  }
  const [ort, policy, schema] = await Promise.all([
    importOrExplain("onnxruntime-web", "vendor/onnxruntime-web/ort.wasm.min.mjs"),
    importOrExplain("lcs-policy", "policy/policy.mjs"),
    fetch(new URL("schema/manifest.schema.json", document.baseURI)).then((r) => {
      if (!r.ok) throw new BundleError(`schema/manifest.schema.json: HTTP ${r.status}`, "lay the app out with lcs-export app");
      return r.json();
    }),
  ]);
  // onnxruntime-web needs an absolute URL here: with a relative one the .wasm file is not found.
  ort.env.wasm.wasmPaths = new URL("vendor/onnxruntime-web/", document.baseURI).href;
  const bundleUrl = new URL(params.get("bundle") || "bundle/", document.baseURI).href;
  const bundle = await loadBundle(bundleUrl, {
    fetch: (url) => fetch(url, { cache: "no-store" }),
    validateSchema: makeSchemaValidator(Ajv2020, schema),
    onProgress: (text) => { $("bundle-info").textContent = text; },
  });
  app.manifest = bundle.manifest;
  app.engine = new Engine(ort, bundle);
  app.policy = policyFromParams(policy.DEFAULT_POLICY);
  app.decide = policy.decide;
  app.policyState = policy.initialState();
  // Level files carry measured costs (the policy reads them); alpha-only bundles get a stand-in.
  app.levels = app.manifest.levels.length > 0 ? policy.levelsFromManifest(app.manifest) : alphaLevels(app.manifest);
  app.chart = new LiveChart($("chart"), { levels: app.levels.length });
  setUpControls();
  setUpPad();
  await startBattery();
  $("app").hidden = false;
  const paths = switchingPaths(app.manifest);
  if (paths.length === 0) {
    throw new BundleError("the bundle has no level files and no alpha-input graphs the web app can run",
      "export with lcs-export onnx CHECKPOINT --levels ... and/or --dynamic-alpha");
  }
  // main() runs inside the queue, so it switches directly rather than through select().
  await switchTo({ path: paths[0], level: 0, alpha: app.levels[0].alpha });
  await classifyAll();
  document.body.dataset.state = "ready";
}

async function importOrExplain(specifier, file) {
  try {
    return await import(specifier);
  } catch (error) {
    throw new BundleError(`could not load ${file} (${error.message})`,
      "lay the app out with lcs-export app BUNDLE --platform web -o DIR (run npm ci in sample_apps/web first)");
  }
}

function policyFromParams(defaults) {
  const overrides = {};
  for (const [key, value] of Object.entries(defaults)) {
    if (typeof value === "number" && params.has(key) && Number.isFinite(Number(params.get(key)))) {
      overrides[key] = Number(params.get(key));
    }
  }
  return { ...defaults, ...overrides };
}

function describeBundle(manifest) {
  const source = manifest.source;
  const [, c, h, w] = manifest.input.shape;
  return `${source.model.name}, ${source.method.name} ${source.shape}, alpha in [${source.alpha.min}, ${source.alpha.max}]; `
    + `input ${c}x${h}x${w}; ${manifest.levels.length} level files; ${manifest.target.name} (${manifest.target.runtime}); `
    + `validation ${manifest.validation.status}; every sha256 checked`;
}

function setUpControls() {
  const manifest = app.manifest;
  $("bundle-info").textContent = describeBundle(manifest);
  for (const path of switchingPaths(manifest)) $("path").add(new Option(PATH_LABELS[path], path));
  app.levels.forEach((level, i) => {
    const file = manifest.levels[i];
    $("level").add(new Option(`${i}: alpha ${level.alpha}` + (file ? ` (${compressionText(file.compression)})` : ""), String(i)));
  });
  $("level").add(new Option("custom alpha", "custom"));
  const slider = $("alpha");
  slider.min = manifest.alpha_input.min;
  slider.max = manifest.alpha_input.max;
  if (params.has("budget")) $("budget").value = params.get("budget");

  $("path").addEventListener("change", () => {
    const path = $("path").value;
    const level = app.choice.level ?? 0;
    const alpha = path === "levels" ? app.levels[level].alpha : app.choice.alpha;
    select({ path, level: path === "levels" ? level : app.choice.level, alpha });
  });
  $("level").addEventListener("change", () => {
    if ($("level").value === "custom") return;
    $("auto").checked = false; // a manual choice overrides auto mode
    const level = Number($("level").value);
    select({ path: app.choice.path, level, alpha: app.levels[level].alpha });
  });
  // The slider switches on release ("change"), not on every pixel ("input"): a switch-once
  // switch is a weights-graph run plus a session creation.
  slider.addEventListener("input", () => { $("alpha-value").textContent = Number(slider.value).toFixed(2); });
  slider.addEventListener("change", () => {
    $("auto").checked = false;
    const alpha = Number(slider.value);
    const level = app.levels.findIndex((l) => Math.abs(l.alpha - alpha) < 1e-6);
    select({ path: app.choice.path, level: level >= 0 ? level : null, alpha });
  });
  $("pressure").addEventListener("change", showSignals);
  // At most one tick waits in the queue: a slow device must not pile them up.
  setInterval(() => {
    if (!$("auto").checked || app.tickQueued) return;
    app.tickQueued = true;
    enqueue(async () => { app.tickQueued = false; await autoTick(); });
  }, AUTO_TICK_MS);
}

function compressionText(compression) {
  return Object.entries(compression).map(([unit, value]) =>
    (unit === "bits" ? `${value} bits` : typeof value === "number" && value <= 1 ? `${unit} ${Math.round(value * 100)}%` : `${unit} ${value}`)).join(", ");
}

/** Switch (queued), then classify every sample and the drawing at the new level. */
function select(choice) {
  return enqueue(async () => {
    await switchTo(choice);
    await classifyAll();
  });
}

async function switchTo(choice) {
  const before = app.choice;
  document.body.dataset.busy = "true";
  const { ms, detail } = await app.engine.select(choice);
  app.choice = { ...choice };
  app.recentMs = [];
  if (before) app.switches.push({ from: before, to: app.choice, ms, detail });
  document.body.dataset.busy = "false";
  syncControls();
  const parts = Object.entries(detail).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k.replace("_ms", "")} ${v.toFixed(1)} ms`);
  $("switch-cost").textContent = `last switch: ${ms.toFixed(1)} ms` + (parts.length ? ` (${parts.join(", ")})` : "")
    + (before ? `, from alpha ${before.alpha} to ${choice.alpha}` : "");
}

function syncControls() {
  const { path, level, alpha } = app.choice;
  $("path").value = path;
  $("level").value = level === null || level === undefined ? "custom" : String(level);
  $("alpha").value = alpha;
  $("alpha-value").textContent = Number(alpha).toFixed(2);
  $("alpha-control").hidden = path === "levels";
  const name = level === null || level === undefined ? `alpha ${alpha}` : `level ${level} (alpha ${alpha})`;
  $("status").textContent = `running ${name} via ${PATH_LABELS[path]}`;
  document.body.dataset.level = level === null || level === undefined ? "custom" : String(level);
}

/** Every sample at batch 1 (latency per inference), compared with the manifest's logits. */
async function classifyAll() {
  const manifest = app.manifest;
  const reference = sampleLogitsAt(manifest, app.choice.alpha);
  const results = [];
  const grid = $("sample-grid");
  grid.replaceChildren();
  for (const [i, image] of manifest.samples.images.entries()) {
    const input = flattenSample(image, manifest.input);
    const { logits, ms } = await app.engine.run(input);
    record(ms);
    const top1 = argmax(logits[0]);
    const diff = reference ? Math.max(...logits[0].map((v, k) => Math.abs(v - reference[i][k]))) : null;
    results.push({ logits: Array.from(logits[0]), top1, ms, label: manifest.samples.labels[i], max_abs_diff_vs_manifest: diff });
    grid.append(sampleCard(input, manifest.samples.labels[i], top1, ms, diff));
  }
  app.lastRun = { ...app.choice, samples: results };
  if (app.drawn) await classifyDrawn();
}

function sampleCard(input, label, top1, ms, diff) {
  const card = document.createElement("div");
  card.className = "sample";
  card.append(imageCanvas(denormalise(input, app.manifest.input)));
  const classes = app.manifest.source.classes;
  const text = document.createElement("div");
  text.innerHTML = `label ${classes[label]}<br><span class="${top1 === label ? "" : "wrong"}">predicted ${classes[top1]}</span><br>${ms.toFixed(2)} ms`;
  if (diff !== null) {
    const ok = diff <= app.manifest.samples.tolerance;
    text.innerHTML += `<br><span class="${ok ? "" : "wrong"}" title="max |logit - PyTorch's| from the manifest">|Δ| ${diff.toExponential(1)}</span>`;
  }
  card.append(text);
  return card;
}

function imageCanvas(intensities) {
  const { channels, height, width } = imageShape(app.manifest.input);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(width, height);
  const plane = width * height;
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < 3; k++) pixels.data[4 * i + k] = 255 * intensities[(channels === 3 ? k * plane : 0) + i];
    pixels.data[4 * i + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function record(ms) {
  app.recentMs.push(ms);
  if (app.recentMs.length > LATENCY_WINDOW) app.recentMs.shift();
  app.chart.push(performance.now(), ms, app.choice.level ?? null);
}

function movingLatency() {
  if (app.recentMs.length === 0) return null;
  const sorted = [...app.recentMs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

// ---- auto mode -------------------------------------------------------------------------

const battery = { api: false, level: null, charging: null };

async function startBattery() {
  if (!navigator.getBattery) return; // Firefox and Safari have no Battery Status API
  try {
    const manager = await navigator.getBattery();
    const read = () => { battery.level = manager.level; battery.charging = manager.charging; showSignals(); };
    battery.api = true;
    manager.addEventListener("levelchange", read);
    manager.addEventListener("chargingchange", read);
    read();
  } catch {
    battery.api = false; // blocked by a permissions policy: the policy treats battery as unknown
  }
}

/** The policy's inputs now: real signals where the browser has them, then the simulation. */
function currentSignals() {
  const budget = Number($("budget").value);
  return {
    nowMs: performance.now(),
    batteryFraction: battery.level,
    charging: battery.charging,
    lowPowerMode: false, // no web API tells
    thermal: "nominal", // no web API tells
    latencyMs: movingLatency(),
    latencyBudgetMs: budget > 0 ? budget : null,
    ...PRESSURES[$("pressure").value],
  };
}

function showSignals() {
  const s = currentSignals();
  const batteryText = s.batteryFraction === null ? "unknown (no Battery Status API)"
    : `${Math.round(s.batteryFraction * 100)}%${s.charging ? ", charging" : ""}`;
  const simulated = $("pressure").value === "off" ? "" : ` (simulated: ${$("pressure").selectedOptions[0].text})`;
  $("signals").textContent = `signals: battery ${batteryText}; thermal ${s.thermal}; low-power ${s.lowPowerMode ? "on" : "off"}; `
    + `latency ${s.latencyMs === null ? "-" : s.latencyMs.toFixed(2) + " ms"} of ${s.latencyBudgetMs ?? "no"} ms budget${simulated}`;
}

/** One auto-mode step: an inference (feeding the latency statistic), then the policy. */
async function autoTick() {
  if (!$("auto").checked) return;
  const manifest = app.manifest;
  const index = app.decisions.length % manifest.samples.images.length;
  const input = app.drawn ?? flattenSample(manifest.samples.images[index], manifest.input);
  const { ms } = await app.engine.run(input);
  record(ms);
  const signals = currentSignals();
  showSignals();
  const state = app.choice.level === null || app.choice.level === undefined ? app.policyState
    : { ...app.policyState, level: app.choice.level };
  const decision = app.decide(app.levels, signals, state, app.policy);
  app.policyState = decision.state;
  app.decisions.push({ t: signals.nowMs, level: decision.level, reason: decision.reason, pressure: $("pressure").value });
  if (decision.level !== app.choice.level) {
    await switchTo({ path: app.choice.path, level: decision.level, alpha: app.levels[decision.level].alpha });
    await classifyAll();
  }
  $("policy").textContent = `auto: level ${decision.level}, ${decision.reason}`;
}

// ---- drawing pad -----------------------------------------------------------------------

function setUpPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let drawing = false;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
  };
  pad.addEventListener("pointerdown", (event) => {
    drawing = true;
    pad.setPointerCapture(event.pointerId);
    ctx.beginPath();
    ctx.moveTo(...at(event));
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    // Stroke width ~ 1/9 of the pad: close to the digits' stroke at the model's resolution.
    ctx.lineWidth = pad.width / 9;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#fff";
    ctx.lineTo(...at(event));
    ctx.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    app.drawn = padInput();
    enqueue(classifyDrawn);
  };
  pad.addEventListener("pointerup", finish);
  pad.addEventListener("pointercancel", finish);
  $("clear").addEventListener("click", () => { clear(); app.drawn = null; $("drawn-result").textContent = "Draw with the mouse or a finger."; });
}

/** The pad resized to the model's input (browser's smoothing), then the manifest's preprocessing. */
function padInput() {
  const { height, width } = imageShape(app.manifest.input);
  const small = document.createElement("canvas");
  small.width = width;
  small.height = height;
  const ctx = small.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage($("pad"), 0, 0, width, height);
  return normalise(intensitiesFromRgba(ctx.getImageData(0, 0, width, height).data, app.manifest.input), app.manifest.input);
}

async function classifyDrawn() {
  if (!app.drawn) return;
  const { logits, ms } = await app.engine.run(app.drawn);
  record(ms);
  const probabilities = softmax(logits[0]);
  const top = argmax(logits[0]);
  const classes = app.manifest.source.classes;
  $("drawn-result").textContent = `predicted ${classes[top]} (${(probabilities[top] * 100).toFixed(0)}%) in ${ms.toFixed(2)} ms`;
  app.lastDrawn = { logits: Array.from(logits[0]), top1: top, ms };
}

enqueue(main);

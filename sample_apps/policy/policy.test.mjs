// node --test sample_apps/policy/ : every case of cases.json through policy.mjs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { DEFAULT_POLICY, decide, initialState, levelsFromManifest, mapThermal } from "./policy.mjs";

const here = (name) => new URL(name, import.meta.url);
const cases = JSON.parse(readFileSync(here("cases.json"), "utf8"));
const policyJson = JSON.parse(readFileSync(here("policy.json"), "utf8"));

const BASE_SIGNALS = {
  nowMs: 0, batteryFraction: null, charging: null, lowPowerMode: false,
  thermal: "nominal", latencyMs: null, latencyBudgetMs: null,
};
// JSON has no NaN: the table writes it as a string.
const decodeNumber = (x) => (x === "NaN" ? NaN : x);

test("DEFAULT_POLICY equals policy.json", () => {
  // JSON round trip turns the inlined table's integer keys into the strings policy.json has.
  assert.deepEqual(JSON.parse(JSON.stringify(DEFAULT_POLICY)), policyJson);
});

test("the case table has at least 40 decision cases", () => {
  assert.ok(cases.decisions.length >= 40, `${cases.decisions.length} cases`);
});

for (const c of cases.decisions) {
  test(`decide: ${c.name}`, () => {
    const policy = { ...DEFAULT_POLICY, ...(c.policy ?? {}) };
    let state = c.state ?? initialState();
    let signals = { ...BASE_SIGNALS };
    c.steps.forEach((step, index) => {
      signals = { ...signals, ...step.signals };
      signals.latencyMs = decodeNumber(signals.latencyMs);
      const result = decide(c.levels, signals, state, policy);
      const where = `step ${index} (${JSON.stringify(step.signals)}): ${result.reason}`;
      assert.equal(result.level, step.expect.level, where);
      assert.equal(result.state.level, result.level, where);
      if (step.expect.reasonHas !== undefined) assert.ok(result.reason.includes(step.expect.reasonHas), where);
      if (step.expect.sinceMs !== undefined) assert.equal(result.state.sinceMs, step.expect.sinceMs, where);
      // The state must survive JSON (apps persist it).
      state = JSON.parse(JSON.stringify(result.state));
    });
  });
}

test("mapThermal: every case", () => {
  for (const t of cases.thermal) {
    assert.equal(mapThermal(t.platform, t.value), t.expect, `${t.platform} ${JSON.stringify(t.value)}`);
  }
});

test("decide refuses a bundle without levels or with a bad cost", () => {
  assert.throws(() => decide([], BASE_SIGNALS, initialState()), /no levels/);
  assert.throws(() => decide([{ alpha: 0, cost: 0 }], BASE_SIGNALS, initialState()), /cost/);
  assert.throws(() => decide([{ alpha: 0, cost: NaN }], BASE_SIGNALS, initialState()), /cost/);
});

test("levelsFromManifest: non-zero FLOPs, else FLOPs, else bytes, in manifest order", () => {
  const manifest = { levels: [
    { alpha: 0.5, flops: 100, bytes: 10, stats: { nonzero_flops: 40 } },
    { alpha: 0.0, flops: 100, bytes: 10, stats: { nonzero_flops: 0 } },
    { alpha: 0.9, flops: 0, bytes: 7, stats: {} },
    { alpha: 0.95, flops: 0, bytes: 0 },
  ] };
  assert.deepEqual(levelsFromManifest(manifest), [
    { alpha: 0.5, cost: 40 }, { alpha: 0.0, cost: 100 }, { alpha: 0.9, cost: 7 }, { alpha: 0.95, cost: 1 },
  ]);
  assert.deepEqual(levelsFromManifest({ levels: [] }), []);
});

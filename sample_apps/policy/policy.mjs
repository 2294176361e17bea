// The level policy (sample_apps/policy/README.md is the specification; cases.json the test).
// No dependencies and no file system access: the web app imports this module in a browser,
// so the default configuration is inlined (a test checks it equals policy.json).

/** The default policy: the contents of policy.json. */
export const DEFAULT_POLICY = Object.freeze({
  version: 1,
  dwellDownMs: 2000,
  dwellUpMs: 6000,
  urgentThermal: ["critical"],
  thermalCaps: { nominal: 1.0, fair: 0.75, serious: 0.4, critical: 0.0 },
  battery: { low: 0.25, critical: 0.1, lowCap: 0.5, criticalCap: 0.0 },
  batteryMargin: 0.05,
  lowPowerCap: 0.5,
  latencyMargin: 0.15,
  thermalMap: {
    ios: {
      nominal: "nominal", fair: "fair", serious: "serious", critical: "critical",
      0: "nominal", 1: "fair", 2: "serious", 3: "critical",
    },
    android: {
      THERMAL_STATUS_NONE: "nominal", THERMAL_STATUS_LIGHT: "fair",
      THERMAL_STATUS_MODERATE: "serious", THERMAL_STATUS_SEVERE: "serious",
      THERMAL_STATUS_CRITICAL: "critical", THERMAL_STATUS_EMERGENCY: "critical",
      THERMAL_STATUS_SHUTDOWN: "critical",
      0: "nominal", 1: "fair", 2: "serious", 3: "serious", 4: "critical", 5: "critical", 6: "critical",
    },
  },
});

export const THERMAL_STATES = Object.freeze(["nominal", "fair", "serious", "critical"]);

/** Caps are compared with this much rounding allowed (cost ratios are not exact). */
const EPSILON = 1e-9;

/**
 * The policy's levels from a bundle manifest, in manifest order: alpha, and as cost the first
 * positive finite number among stats.nonzero_flops, flops and bytes (else 1).
 */
export function levelsFromManifest(manifest) {
  return (manifest.levels ?? []).map((level) => {
    const candidates = [level.stats?.nonzero_flops, level.flops, level.bytes];
    const cost = candidates.find((x) => isPositive(x)) ?? 1;
    return { alpha: level.alpha, cost };
  });
}

/** The state before the first decision. */
export function initialState() {
  return { level: null, sinceMs: null };
}

/** Map a platform's thermal signal (name or integer) onto nominal / fair / serious / critical. */
export function mapThermal(platform, value, policy = DEFAULT_POLICY) {
  const table = policy.thermalMap[platform];
  if (!table || value === null || value === undefined) return "nominal";
  const key = typeof value === "number" ? (Number.isInteger(value) ? String(value) : null) : String(value);
  if (key === null || !Object.prototype.hasOwnProperty.call(table, key)) return "nominal";
  return table[key];
}

const isFiniteNumber = (x) => typeof x === "number" && Number.isFinite(x);
const isPositive = (x) => isFiniteNumber(x) && x > 0;

function checkLevels(levels) {
  if (!Array.isArray(levels) || levels.length === 0) throw new Error("the bundle has no levels");
  levels.forEach((level, index) => {
    if (!isPositive(level.cost)) throw new Error(`level ${index} has cost ${level.cost}; costs must be positive numbers`);
    if (!isFiniteNumber(level.alpha)) throw new Error(`level ${index} has alpha ${level.alpha}`);
  });
}

/** Indices in accuracy order: ascending alpha, ties by index. */
function accuracyOrder(levels) {
  return levels.map((_, i) => i).sort((a, b) => levels[a].alpha - levels[b].alpha || a - b);
}

/** The names of the constraints level j fails (empty: allowed), in the README's order. */
function failures(j, current, levels, signals, policy, maxCost) {
  const rel = levels[j].cost / maxCost;
  const up = current !== null && levels[j].cost > levels[current].cost;
  const failed = [];
  const thermal = THERMAL_STATES.includes(signals.thermal) ? signals.thermal : "nominal";
  if (rel > policy.thermalCaps[thermal] + EPSILON) failed.push(`thermal ${thermal}`);
  const battery = signals.batteryFraction;
  if (isFiniteNumber(battery) && battery >= 0 && battery <= 1 && signals.charging !== true) {
    const b = battery - (up ? policy.batteryMargin : 0);
    if (b <= policy.battery.critical) {
      if (rel > policy.battery.criticalCap + EPSILON) failed.push("battery critical");
    } else if (b <= policy.battery.low) {
      if (rel > policy.battery.lowCap + EPSILON) failed.push("battery low");
    }
  }
  if (signals.lowPowerMode === true && rel > policy.lowPowerCap + EPSILON) failed.push("low power mode");
  if (current !== null && isPositive(signals.latencyMs) && isPositive(signals.latencyBudgetMs)) {
    const estimate = (signals.latencyMs * levels[j].cost) / levels[current].cost;
    const limit = signals.latencyBudgetMs * (up ? 1 - policy.latencyMargin : 1);
    if (estimate > limit) failed.push("latency budget");
  }
  return failed;
}

/** The target level and its reason, before the dwell rule. */
function target(levels, signals, current, policy) {
  const order = accuracyOrder(levels);
  const maxCost = Math.max(...levels.map((l) => l.cost));
  for (let position = 0; position < order.length; position++) {
    const j = order[position];
    if (failures(j, current, levels, signals, policy, maxCost).length === 0) {
      if (position === 0) return { level: j, reason: "most accurate level" };
      const before = failures(order[position - 1], current, levels, signals, policy, maxCost);
      return { level: j, reason: `limited by ${before.join(", ")}` };
    }
  }
  // No level is allowed: the cheapest, ties broken by accuracy order.
  let cheapest = order[0];
  for (const j of order) if (levels[j].cost < levels[cheapest].cost) cheapest = j;
  const failed = failures(cheapest, current, levels, signals, policy, maxCost);
  return { level: cheapest, reason: `no level meets ${failed.join(", ")}; using the cheapest` };
}

/**
 * Decide the level to run.
 * @param {{alpha:number, cost:number}[]} levels manifest order, any alpha order
 * @param {object} signals nowMs, batteryFraction, charging, lowPowerMode, thermal, latencyMs, latencyBudgetMs
 * @param {{level:number|null, sinceMs:number|null}} state what the previous call returned
 * @returns {{level:number, state:{level:number, sinceMs:number|null}, reason:string}}
 */
export function decide(levels, signals, state, policy = DEFAULT_POLICY) {
  checkLevels(levels);
  const now = signals.nowMs;
  const valid = state && Number.isInteger(state.level) && state.level >= 0 && state.level < levels.length;
  const current = valid ? state.level : null;
  const wanted = target(levels, signals, current, policy);
  const since = valid && isFiniteNumber(state.sinceMs) ? state.sinceMs : null;
  const change = () => ({
    level: wanted.level,
    state: { level: wanted.level, sinceMs: isFiniteNumber(now) ? now : null },
    reason: wanted.reason,
  });
  const hold = (why, sinceMs) => ({
    level: current,
    state: { level: current, sinceMs },
    reason: `${why} (wants level ${wanted.level}): ${wanted.reason}`,
  });

  if (current === null) return change();
  if (wanted.level === current) return { level: current, state: { level: current, sinceMs: since }, reason: wanted.reason };
  const down = levels[wanted.level].cost <= levels[current].cost;
  if (down && policy.urgentThermal.includes(signals.thermal)) return change();
  if (!isFiniteNumber(now)) return hold("no clock", since);
  if (since !== null && now < since) return hold("clock went backwards", now);
  if (since === null || now - since >= (down ? policy.dwellDownMs : policy.dwellUpMs)) return change();
  return hold("holding for dwell", since);
}

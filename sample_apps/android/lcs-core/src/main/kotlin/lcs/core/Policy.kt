package lcs.core

import com.google.gson.JsonObject
import com.google.gson.JsonParser

// The level policy, as specified in sample_apps/policy/README.md and tested by its cases.json.
// Mirrors policy.mjs and lcs_export/policy.py line for line; kept to Kotlin 1.3 so the
// Debian compiler that runs the tests here accepts it.

/** One level of a bundle: its alpha and relative cost (positive; only ratios matter). */
data class PolicyLevel(val alpha: Double, val cost: Double)

/** What the device reports at one moment (null: unknown). */
data class Signals(
    val nowMs: Double?,
    val batteryFraction: Double? = null,
    val charging: Boolean? = null,
    val lowPowerMode: Boolean = false,
    val thermal: String = "nominal",
    val latencyMs: Double? = null,
    val latencyBudgetMs: Double? = null
)

/** What one decision hands the next. */
data class PolicyState(val level: Int? = null, val sinceMs: Double? = null)

/** The level to run (index into the levels as given), the next state and a reason for the UI. */
data class Decision(val level: Int, val state: PolicyState, val reason: String)

/** The policy configuration (policy.json). */
class PolicyConfig(val json: JsonObject) {
    val dwellDownMs: Double = json.get("dwellDownMs").asDouble
    val dwellUpMs: Double = json.get("dwellUpMs").asDouble
    val urgentThermal: Set<String> = json.getAsJsonArray("urgentThermal").map { it.asString }.toSet()
    val thermalCaps: Map<String, Double> = json.getAsJsonObject("thermalCaps").entrySet().associate { it.key to it.value.asDouble }
    private val battery = json.getAsJsonObject("battery")
    val batteryLow: Double = battery.get("low").asDouble
    val batteryCritical: Double = battery.get("critical").asDouble
    val batteryLowCap: Double = battery.get("lowCap").asDouble
    val batteryCriticalCap: Double = battery.get("criticalCap").asDouble
    val batteryMargin: Double = json.get("batteryMargin").asDouble
    val lowPowerCap: Double = json.get("lowPowerCap").asDouble
    val latencyMargin: Double = json.get("latencyMargin").asDouble
    val thermalMap: Map<String, Map<String, String>> = json.getAsJsonObject("thermalMap").entrySet().associate { platform ->
        platform.key to platform.value.asJsonObject.entrySet().associate { it.key to it.value.asString }
    }

    /** A copy with some top-level keys replaced (the case table's per-case policy). */
    fun with(overrides: JsonObject): PolicyConfig {
        val merged = json.deepCopy()
        for ((key, value) in overrides.entrySet()) merged.add(key, value)
        return PolicyConfig(merged)
    }

    companion object {
        /** policy.json, inlined so an app needs no extra asset; a test checks they are equal. */
        const val DEFAULT_JSON = """{
  "version": 1, "dwellDownMs": 2000, "dwellUpMs": 6000, "urgentThermal": ["critical"],
  "thermalCaps": {"nominal": 1.0, "fair": 0.75, "serious": 0.4, "critical": 0.0},
  "battery": {"low": 0.25, "critical": 0.1, "lowCap": 0.5, "criticalCap": 0.0},
  "batteryMargin": 0.05, "lowPowerCap": 0.5, "latencyMargin": 0.15,
  "thermalMap": {
    "ios": {"nominal": "nominal", "fair": "fair", "serious": "serious", "critical": "critical",
            "0": "nominal", "1": "fair", "2": "serious", "3": "critical"},
    "android": {"THERMAL_STATUS_NONE": "nominal", "THERMAL_STATUS_LIGHT": "fair",
                "THERMAL_STATUS_MODERATE": "serious", "THERMAL_STATUS_SEVERE": "serious",
                "THERMAL_STATUS_CRITICAL": "critical", "THERMAL_STATUS_EMERGENCY": "critical",
                "THERMAL_STATUS_SHUTDOWN": "critical",
                "0": "nominal", "1": "fair", "2": "serious", "3": "serious", "4": "critical", "5": "critical", "6": "critical"}
  }
}"""
        val DEFAULT: PolicyConfig = PolicyConfig(JsonParser.parseString(DEFAULT_JSON).asJsonObject)
    }
}

object Policy {
    val THERMAL_STATES = listOf("nominal", "fair", "serious", "critical")
    /** Cost ratios are not exact: a cap is met within this much rounding. */
    private const val EPSILON = 1e-9

    fun initialState(): PolicyState = PolicyState(null, null)

    /** A platform's thermal signal (name, or integer as on Android / iOS) as one of the four states. */
    fun mapThermal(platform: String, value: Any?, policy: PolicyConfig = PolicyConfig.DEFAULT): String {
        val table = policy.thermalMap[platform] ?: return "nominal"
        val key = when (value) {
            null -> return "nominal"
            is Int, is Long -> value.toString()
            is Number -> {
                val d = value.toDouble()
                if (d.isFinite() && d == Math.floor(d)) d.toLong().toString() else return "nominal"
            }
            is String -> value
            else -> return "nominal"
        }
        return table[key] ?: "nominal"
    }

    private fun finite(x: Double?): Boolean = x != null && !x.isNaN() && !x.isInfinite()
    private fun positive(x: Double?): Boolean = finite(x) && x!! > 0

    private fun checkLevels(levels: List<PolicyLevel>) {
        require(levels.isNotEmpty()) { "the bundle has no levels" }
        levels.forEachIndexed { i, level ->
            require(positive(level.cost)) { "level $i has cost ${level.cost}; costs must be positive numbers" }
            require(finite(level.alpha)) { "level $i has alpha ${level.alpha}" }
        }
    }

    /** Indices by ascending alpha, ties by index (sortedWith is stable). */
    private fun accuracyOrder(levels: List<PolicyLevel>): List<Int> =
        levels.indices.sortedWith(compareBy { levels[it].alpha })

    /** Names of the constraints level j fails, in the README's order (empty: allowed). */
    private fun failures(j: Int, current: Int?, levels: List<PolicyLevel>, s: Signals, p: PolicyConfig, maxCost: Double): List<String> {
        val rel = levels[j].cost / maxCost
        // Upgrades are checked against stricter thresholds: that is what stops flapping.
        val up = current != null && levels[j].cost > levels[current].cost
        val failed = mutableListOf<String>()
        val thermal = if (s.thermal in THERMAL_STATES) s.thermal else "nominal"
        if (rel > p.thermalCaps.getValue(thermal) + EPSILON) failed.add("thermal $thermal")
        val battery = s.batteryFraction
        if (battery != null && finite(battery) && battery >= 0 && battery <= 1 && s.charging != true) {
            val b = battery - (if (up) p.batteryMargin else 0.0)
            if (b <= p.batteryCritical) {
                if (rel > p.batteryCriticalCap + EPSILON) failed.add("battery critical")
            } else if (b <= p.batteryLow) {
                if (rel > p.batteryLowCap + EPSILON) failed.add("battery low")
            }
        }
        if (s.lowPowerMode && rel > p.lowPowerCap + EPSILON) failed.add("low power mode")
        if (current != null && positive(s.latencyMs) && positive(s.latencyBudgetMs)) {
            val estimate = s.latencyMs!! * levels[j].cost / levels[current].cost
            val limit = s.latencyBudgetMs!! * (if (up) 1 - p.latencyMargin else 1.0)
            if (estimate > limit) failed.add("latency budget")
        }
        return failed
    }

    /** The level the signals ask for, and its reason, before the dwell rule. */
    private fun target(levels: List<PolicyLevel>, s: Signals, current: Int?, p: PolicyConfig): Pair<Int, String> {
        val order = accuracyOrder(levels)
        val maxCost = levels.map { it.cost }.max()!!
        for ((position, j) in order.withIndex()) {
            if (failures(j, current, levels, s, p, maxCost).isEmpty()) {
                if (position == 0) return Pair(j, "most accurate level")
                val before = failures(order[position - 1], current, levels, s, p, maxCost)
                return Pair(j, "limited by " + before.joinToString(", "))
            }
        }
        var cheapest = order[0]
        for (j in order) if (levels[j].cost < levels[cheapest].cost) cheapest = j
        val failed = failures(cheapest, current, levels, s, p, maxCost)
        return Pair(cheapest, "no level meets " + failed.joinToString(", ") + "; using the cheapest")
    }

    /** Decide the level to run; throws IllegalArgumentException for no levels or a bad cost. */
    fun decide(levels: List<PolicyLevel>, signals: Signals, state: PolicyState, policy: PolicyConfig = PolicyConfig.DEFAULT): Decision {
        checkLevels(levels)
        val now = signals.nowMs
        val stateLevel = state.level
        val current: Int? = if (stateLevel != null && stateLevel >= 0 && stateLevel < levels.size) stateLevel else null
        val (wanted, reason) = target(levels, signals, current, policy)
        val since: Double? = if (current != null && finite(state.sinceMs)) state.sinceMs else null

        fun change() = Decision(wanted, PolicyState(wanted, if (finite(now)) now else null), reason)
        fun hold(why: String, sinceMs: Double?) =
            Decision(current!!, PolicyState(current, sinceMs), "$why (wants level $wanted): $reason")

        if (current == null) return change()
        if (wanted == current) return Decision(current, PolicyState(current, since), reason)
        val down = levels[wanted].cost <= levels[current].cost
        if (down && signals.thermal in policy.urgentThermal) return change()
        if (now == null || !finite(now)) return hold("no clock", since)
        if (since != null && now < since) return hold("clock went backwards", now)
        val dwell = if (down) policy.dwellDownMs else policy.dwellUpMs
        if (since == null || now - since >= dwell) return change()
        return hold("holding for dwell", since)
    }
}

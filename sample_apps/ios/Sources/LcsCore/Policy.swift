import Foundation

// The level policy, as specified in sample_apps/policy/README.md and tested by its cases.json.
// Mirrors Policy.kt (compiled and tested on the JVM) and policy.mjs line for line.

public struct PolicyLevel: Equatable {
    public let alpha: Double
    public let cost: Double
    public init(alpha: Double, cost: Double) { self.alpha = alpha; self.cost = cost }
}

/// What the device reports at one moment (nil: unknown).
public struct Signals {
    public var nowMs: Double?
    public var batteryFraction: Double?
    public var charging: Bool?
    public var lowPowerMode: Bool
    public var thermal: String
    public var latencyMs: Double?
    public var latencyBudgetMs: Double?

    public init(nowMs: Double?, batteryFraction: Double? = nil, charging: Bool? = nil, lowPowerMode: Bool = false,
                thermal: String = "nominal", latencyMs: Double? = nil, latencyBudgetMs: Double? = nil) {
        self.nowMs = nowMs; self.batteryFraction = batteryFraction; self.charging = charging
        self.lowPowerMode = lowPowerMode; self.thermal = thermal; self.latencyMs = latencyMs
        self.latencyBudgetMs = latencyBudgetMs
    }
}

public struct PolicyState: Equatable, Codable {
    public var level: Int?
    public var sinceMs: Double?
    public init(level: Int? = nil, sinceMs: Double? = nil) { self.level = level; self.sinceMs = sinceMs }
}

public struct Decision: Equatable {
    public let level: Int
    public let state: PolicyState
    public let reason: String
}

public enum PolicyError: Error, Equatable {
    case noLevels
    case badLevel(index: Int)
}

/// policy.json.
public struct PolicyConfig: Codable, Equatable {
    public struct Battery: Codable, Equatable {
        public var low: Double
        public var critical: Double
        public var lowCap: Double
        public var criticalCap: Double
    }
    public var version: Int
    public var dwellDownMs: Double
    public var dwellUpMs: Double
    public var urgentThermal: [String]
    public var thermalCaps: [String: Double]
    public var battery: Battery
    public var batteryMargin: Double
    public var lowPowerCap: Double
    public var latencyMargin: Double
    public var thermalMap: [String: [String: String]]

    /// policy.json, inlined so the app needs no extra resource; a test checks they are equal.
    public static let defaultJSON = """
    {
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
    }
    """
    // swiftlint:disable:next force_try
    public static let standard: PolicyConfig = try! JSONDecoder().decode(PolicyConfig.self, from: Data(defaultJSON.utf8))
}

public enum Policy {
    public static let thermalStates = ["nominal", "fair", "serious", "critical"]
    /// Cost ratios are not exact: a cap is met within this much rounding.
    static let epsilon = 1e-9

    public static func initialState() -> PolicyState { PolicyState() }

    /// A platform's thermal signal (a name, or an integer such as ProcessInfo.ThermalState.rawValue).
    public static func mapThermal(platform: String, value: Any?, policy: PolicyConfig = .standard) -> String {
        guard let table = policy.thermalMap[platform], let value = value else { return "nominal" }
        let key: String
        switch value {
        case let s as String: key = s
        case let i as Int: key = String(i)
        case let d as Double:
            guard d.isFinite, d == d.rounded() else { return "nominal" }
            key = String(Int(d))
        default: return "nominal"
        }
        return table[key] ?? "nominal"
    }

    private static func finite(_ x: Double?) -> Bool { x.map { $0.isFinite } ?? false }
    private static func positive(_ x: Double?) -> Bool { finite(x) && x! > 0 }

    /// Indices by ascending alpha, ties by index.
    private static func accuracyOrder(_ levels: [PolicyLevel]) -> [Int] {
        levels.indices.sorted { a, b in levels[a].alpha != levels[b].alpha ? levels[a].alpha < levels[b].alpha : a < b }
    }

    /// Names of the constraints level j fails, in the README's order (empty: allowed).
    private static func failures(_ j: Int, _ current: Int?, _ levels: [PolicyLevel], _ s: Signals,
                                 _ p: PolicyConfig, _ maxCost: Double) -> [String] {
        let rel = levels[j].cost / maxCost
        // Upgrades are checked against stricter thresholds: that is what stops flapping.
        let up = current.map { levels[j].cost > levels[$0].cost } ?? false
        var failed: [String] = []
        let thermal = thermalStates.contains(s.thermal) ? s.thermal : "nominal"
        if rel > (p.thermalCaps[thermal] ?? 1) + epsilon { failed.append("thermal \(thermal)") }
        if let battery = s.batteryFraction, battery.isFinite, battery >= 0, battery <= 1, s.charging != true {
            let b = battery - (up ? p.batteryMargin : 0)
            if b <= p.battery.critical {
                if rel > p.battery.criticalCap + epsilon { failed.append("battery critical") }
            } else if b <= p.battery.low {
                if rel > p.battery.lowCap + epsilon { failed.append("battery low") }
            }
        }
        if s.lowPowerMode && rel > p.lowPowerCap + epsilon { failed.append("low power mode") }
        if let c = current, positive(s.latencyMs), positive(s.latencyBudgetMs) {
            let estimate = s.latencyMs! * levels[j].cost / levels[c].cost
            let limit = s.latencyBudgetMs! * (up ? 1 - p.latencyMargin : 1)
            if estimate > limit { failed.append("latency budget") }
        }
        return failed
    }

    /// The level the signals ask for, and its reason, before the dwell rule.
    private static func target(_ levels: [PolicyLevel], _ s: Signals, _ current: Int?, _ p: PolicyConfig) -> (Int, String) {
        let order = accuracyOrder(levels)
        let maxCost = levels.map(\.cost).max()!
        for (position, j) in order.enumerated() where failures(j, current, levels, s, p, maxCost).isEmpty {
            if position == 0 { return (j, "most accurate level") }
            let before = failures(order[position - 1], current, levels, s, p, maxCost)
            return (j, "limited by " + before.joined(separator: ", "))
        }
        var cheapest = order[0]
        for j in order where levels[j].cost < levels[cheapest].cost { cheapest = j }
        let failed = failures(cheapest, current, levels, s, p, maxCost)
        return (cheapest, "no level meets " + failed.joined(separator: ", ") + "; using the cheapest")
    }

    /// Decide the level to run (an index into `levels` as given).
    public static func decide(_ levels: [PolicyLevel], _ signals: Signals, _ state: PolicyState,
                              policy: PolicyConfig = .standard) throws -> Decision {
        guard !levels.isEmpty else { throw PolicyError.noLevels }
        for (i, level) in levels.enumerated() where !positive(level.cost) || !level.alpha.isFinite {
            throw PolicyError.badLevel(index: i)
        }
        let now = signals.nowMs
        let current: Int? = state.level.flatMap { $0 >= 0 && $0 < levels.count ? $0 : nil }
        let (wanted, reason) = target(levels, signals, current, policy)
        let since: Double? = current != nil && finite(state.sinceMs) ? state.sinceMs : nil

        func change() -> Decision {
            Decision(level: wanted, state: PolicyState(level: wanted, sinceMs: finite(now) ? now : nil), reason: reason)
        }
        func hold(_ why: String, _ sinceMs: Double?) -> Decision {
            Decision(level: current!, state: PolicyState(level: current, sinceMs: sinceMs),
                     reason: "\(why) (wants level \(wanted)): \(reason)")
        }

        guard let c = current else { return change() }
        if wanted == c { return Decision(level: c, state: PolicyState(level: c, sinceMs: since), reason: reason) }
        let down = levels[wanted].cost <= levels[c].cost
        if down && policy.urgentThermal.contains(signals.thermal) { return change() }
        guard let t = now, t.isFinite else { return hold("no clock", since) }
        if let s = since, t < s { return hold("clock went backwards", t) }
        let dwell = down ? policy.dwellDownMs : policy.dwellUpMs
        if since == nil || t - since! >= dwell { return change() }
        return hold("holding for dwell", since)
    }
}

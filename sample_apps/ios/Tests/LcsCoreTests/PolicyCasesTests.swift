import Foundation
import XCTest
@testable import LcsCore

/// Every case of sample_apps/policy/cases.json through the Swift policy.
final class PolicyCasesTests: XCTestCase {
    static let policyDir = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("policy")

    func load(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Self.policyDir.appendingPathComponent(name))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func number(_ value: Any?) -> Double? {
        if let s = value as? String, s == "NaN" { return .nan }
        return (value as? NSNumber)?.doubleValue
    }

    func testInlinedDefaultEqualsPolicyJson() throws {
        let data = try Data(contentsOf: Self.policyDir.appendingPathComponent("policy.json"))
        XCTAssertEqual(try JSONDecoder().decode(PolicyConfig.self, from: data), PolicyConfig.standard)
    }

    func testEveryDecisionCase() throws {
        let table = try load("cases.json")
        let cases = try XCTUnwrap(table["decisions"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(cases.count, 40)
        let defaults = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(PolicyConfig.defaultJSON.utf8)) as? [String: Any])
        for testCase in cases {
            let name = testCase["name"] as? String ?? "?"
            let levels = (testCase["levels"] as? [[String: Any]] ?? []).map {
                PolicyLevel(alpha: number($0["alpha"])!, cost: number($0["cost"])!)
            }
            var policy = PolicyConfig.standard
            if let overrides = testCase["policy"] as? [String: Any] {
                let merged = defaults.merging(overrides) { _, new in new }
                policy = try JSONDecoder().decode(PolicyConfig.self, from: JSONSerialization.data(withJSONObject: merged))
            }
            var state = Policy.initialState()
            if let given = testCase["state"] as? [String: Any] {
                state = PolicyState(level: (given["level"] as? NSNumber)?.intValue, sinceMs: number(given["sinceMs"]))
            }
            var merged: [String: Any] = [:]
            for (index, step) in (testCase["steps"] as? [[String: Any]] ?? []).enumerated() {
                merged.merge(step["signals"] as? [String: Any] ?? [:]) { _, new in new }
                let signals = Signals(
                    nowMs: number(merged["nowMs"]), batteryFraction: number(merged["batteryFraction"]),
                    charging: merged["charging"] as? Bool, lowPowerMode: merged["lowPowerMode"] as? Bool ?? false,
                    thermal: merged["thermal"] as? String ?? "nominal", latencyMs: number(merged["latencyMs"]),
                    latencyBudgetMs: number(merged["latencyBudgetMs"]))
                let decision = try Policy.decide(levels, signals, state, policy: policy)
                let expect = step["expect"] as? [String: Any] ?? [:]
                let whereText = "\(name), step \(index): \(decision.reason)"
                XCTAssertEqual(decision.level, (expect["level"] as? NSNumber)?.intValue, whereText)
                XCTAssertEqual(decision.state.level, decision.level, whereText)
                if let has = expect["reasonHas"] as? String { XCTAssertTrue(decision.reason.contains(has), whereText) }
                if expect.keys.contains("sinceMs") { XCTAssertEqual(decision.state.sinceMs, number(expect["sinceMs"]), whereText) }
                state = decision.state
            }
        }
    }

    func testEveryThermalCase() throws {
        let table = try load("cases.json")
        for item in try XCTUnwrap(table["thermal"] as? [[String: Any]]) {
            var value: Any? = item["value"]
            if value is NSNull { value = nil }
            if let n = value as? NSNumber { value = n.doubleValue == n.doubleValue.rounded() ? n.intValue as Any : n.doubleValue as Any }
            XCTAssertEqual(Policy.mapThermal(platform: item["platform"] as! String, value: value), item["expect"] as? String, "\(item)")
        }
    }

    func testRefusesLevelsThatCannotBeUsed() {
        XCTAssertThrowsError(try Policy.decide([], Signals(nowMs: 0), Policy.initialState()))
        XCTAssertThrowsError(try Policy.decide([PolicyLevel(alpha: 0, cost: 0)], Signals(nowMs: 0), Policy.initialState()))
    }
}

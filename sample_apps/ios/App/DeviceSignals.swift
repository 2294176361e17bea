import Foundation
import LcsCore
#if canImport(UIKit)
import UIKit
#endif

/// The device's signals for the policy: thermal state, Low Power Mode and the battery.
@MainActor
enum DeviceSignals {
    static func read(latencyMs: Double?, latencyBudgetMs: Double?, simulatePressure: Bool) -> Signals {
        let info = ProcessInfo.processInfo
        var battery: Double?
        var charging: Bool?
        #if canImport(UIKit)
        UIDevice.current.isBatteryMonitoringEnabled = true
        let level = UIDevice.current.batteryLevel // -1 when unknown (the simulator)
        if level >= 0 { battery = Double(level) }
        switch UIDevice.current.batteryState {
        case .charging, .full: charging = true
        case .unplugged: charging = false
        default: charging = nil
        }
        #endif
        let thermal = simulatePressure ? "serious" : Policy.mapThermal(platform: "ios", value: info.thermalState.rawValue)
        return Signals(nowMs: info.systemUptime * 1000, batteryFraction: battery, charging: charging,
                       lowPowerMode: info.isLowPowerModeEnabled, thermal: thermal,
                       latencyMs: latencyMs, latencyBudgetMs: latencyBudgetMs)
    }
}

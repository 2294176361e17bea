import Foundation
import LcsCore
import SwiftUI

/// Loads the bundle, runs the manifest's samples, switches level by hand or by the policy.
@MainActor
final class AppModel: ObservableObject {
    static let latencyBudgetMs = 20.0

    @Published var error: String?
    @Published var status = "loading bundle..."
    @Published var rungs: [Rung] = []
    @Published var selected = 0
    @Published var auto = false
    @Published var simulatePressure = false
    @Published var prediction = ""
    @Published var reason = ""
    @Published var sample = 0

    private var engine: CoreMLEngine?
    private var policyState = Policy.initialState()
    private var latencies: [Double] = [] // at the current level only

    /// The bundle: a folder reference named "bundle" in the app, or $LCS_BUNDLE (macOS runs).
    private func bundleDirectory() -> URL? {
        if let path = ProcessInfo.processInfo.environment["LCS_BUNDLE"] { return URL(fileURLWithPath: path) }
        return Bundle.main.url(forResource: "bundle", withExtension: nil)
    }

    func load() async {
        do {
            guard let directory = bundleDirectory() else { throw BundleError("no bundle in the app (add the bundle folder as 'bundle')") }
            let manifest = try Bundles.open(directory, target: "coreml")
            var multifunction = false
            if #available(iOS 18.0, macOS 15.0, *) { multifunction = true }
            rungs = manifest.ladder(multifunction: multifunction)
            guard !rungs.isEmpty else { throw BundleError("the bundle has neither level packages nor an alpha-input program") }
            engine = CoreMLEngine(directory: directory, manifest: manifest)
            let cost = try await engine!.switchTo(rungs[0])
            status = String(format: "bundle ok: %ld files verified; level opened in %.1f ms", manifest.artifacts.count, cost)
            infer()
        } catch {
            self.error = "bundle refused: \(error.localizedDescription)"
        }
    }

    func pick(_ index: Int, why: String) async {
        guard let engine = engine, index >= 0, index < rungs.count, engine.rung != rungs[index] else { return }
        do {
            let cost = try await engine.switchTo(rungs[index])
            selected = index
            latencies.removeAll() // the latency statistic describes the current level only
            status = String(format: "switched to alpha %.2f (%@) in %.1f ms", rungs[index].alpha, why, cost)
            infer()
        } catch {
            self.error = "could not switch: \(error.localizedDescription)"
        }
    }

    var median: Double? {
        latencies.isEmpty ? nil : latencies.sorted()[latencies.count / 2]
    }

    func sampleInput() -> [Float]? {
        guard let engine = engine,
              let samples = engine.manifest.json["samples"] as? [String: Any],
              let images = samples["images"] as? [Any], !images.isEmpty else { return nil }
        var flat: [Float] = []
        func collect(_ e: Any) { if let a = e as? [Any] { a.forEach(collect) } else if let n = e as? NSNumber { flat.append(n.floatValue) } }
        collect(images[sample % images.count]) // already preprocessed, NCHW
        return flat
    }

    func infer() {
        guard let engine = engine, let input = sampleInput() else { return }
        do {
            let (logits, ms) = try engine.predict(input)
            latencies.append(ms)
            if latencies.count > 20 { latencies.removeFirst() }
            let best = logits.indices.max { logits[$0] < logits[$1] } ?? 0
            prediction = String(format: "prediction: %@   %.2f ms (median %.2f ms)", engine.manifest.classes[best], ms, median ?? .nan)
        } catch {
            self.error = "inference failed: \(error.localizedDescription)"
        }
    }

    /// Auto mode: every half second read the signals, ask the policy, switch when it says so.
    func runAuto() async {
        while auto, error == nil {
            let signals = DeviceSignals.read(latencyMs: median, latencyBudgetMs: Self.latencyBudgetMs,
                                             simulatePressure: simulatePressure)
            do {
                let decision = try Policy.decide(rungs.map { PolicyLevel(alpha: $0.alpha, cost: $0.cost) }, signals, policyState)
                policyState = decision.state
                reason = "thermal \(signals.thermal), low power \(signals.lowPowerMode), battery \(signals.batteryFraction.map { String(format: "%.2f", $0) } ?? "unknown"): \(decision.reason)"
                await pick(decision.level, why: "auto")
            } catch {
                self.error = "policy: \(error)"
            }
            infer()
            try? await Task.sleep(nanoseconds: 500_000_000)
        }
    }
}

struct ContentView: View {
    @StateObject private var model = AppModel()

    var body: some View {
        VStack(alignment: .leading, spacing: 12) {
            if let error = model.error {
                Text(error).foregroundColor(.red)
            } else {
                Text(model.status).font(.footnote)
                Picker("level", selection: Binding(get: { model.selected }, set: { index in
                    Task { await model.pick(index, why: "picked") }
                })) {
                    ForEach(model.rungs.indices, id: \.self) { i in
                        Text(String(format: "alpha %.2f", model.rungs[i].alpha)).tag(i)
                    }
                }
                .disabled(model.auto)
                Toggle("auto (policy)", isOn: Binding(get: { model.auto }, set: { on in
                    model.auto = on
                    if on { Task { await model.runAuto() } }
                }))
                Toggle("simulate pressure (thermal serious)", isOn: $model.simulatePressure)
                Text(model.prediction).font(.title3)
                Button("next sample") { model.sample += 1; model.infer() }
                Text(model.reason).font(.footnote)
            }
            Spacer()
        }
        .padding()
        .task { await model.load() }
    }
}

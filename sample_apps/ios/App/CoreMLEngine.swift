import CoreML
import Foundation
import LcsCore

/// Runs one level of a verified Core ML bundle and switches between levels: a function of the
/// multifunction package (MLModelConfiguration.functionName, iOS 18), another level package, or
/// the alpha-input program with a different alpha fed per call.
final class CoreMLEngine {
    let directory: URL
    let manifest: Manifest
    private var compiled: [String: URL] = [:] // package path -> compiled model, compiled once
    private var model: MLModel?
    private(set) var rung: Rung?

    init(directory: URL, manifest: Manifest) {
        self.directory = directory
        self.manifest = manifest
    }

    private func compiledURL(_ path: String) async throws -> URL {
        if let url = compiled[path] { return url }
        let url = try await MLModel.compileModel(at: directory.appendingPathComponent(path))
        compiled[path] = url
        return url
    }

    /// Switch to `target`; returns the switch's cost in milliseconds.
    func switchTo(_ target: Rung) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let configuration = MLModelConfiguration()
        let path: String
        switch target.source {
        case let .function(package, name):
            guard #available(iOS 18.0, macOS 15.0, *) else { throw BundleError("multifunction packages need iOS 18") }
            configuration.functionName = name
            path = package
        case let .package(file):
            path = file
        case let .alphaInput(program):
            path = program
        }
        // The alpha-input program serves every alpha: keep the loaded model, change only the alpha.
        let sameProgram: Bool
        if case let .alphaInput(program)? = rung?.source, case let .alphaInput(next) = target.source {
            sameProgram = program == next && model != nil
        } else {
            sameProgram = false
        }
        if !sameProgram {
            model = try MLModel(contentsOf: try await compiledURL(path), configuration: configuration)
        }
        rung = target
        return milliseconds(clock.now - start)
    }

    /// Logits of one preprocessed image (batch 1) and the inference time in milliseconds.
    func predict(_ input: [Float]) throws -> ([Float], Double) {
        guard let model = model, let rung = rung else { throw BundleError("no level loaded") }
        let spec = manifest.input
        let shape = spec.layout == "NCHW" ? [1, spec.channels, spec.height, spec.width] : [1, spec.height, spec.width, spec.channels]
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        guard input.count == array.count else { throw BundleError("the image has \(input.count) values, the model takes \(array.count)") }
        let pointer = array.dataPointer.bindMemory(to: Float.self, capacity: array.count) // a new array is contiguous
        for i in 0..<input.count { pointer[i] = input[i] }
        var features: [String: Any] = [spec.name: array]
        if case .alphaInput = rung.source {
            let alpha = try MLMultiArray(shape: [1], dataType: .float32) // alpha is float32 [1] in every bundle
            alpha[0] = NSNumber(value: Float(rung.alpha))
            features["alpha"] = alpha
        }
        let clock = ContinuousClock()
        let start = clock.now
        let output = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        let elapsed = milliseconds(clock.now - start)
        guard let logits = output.featureValue(for: manifest.outputName)?.multiArrayValue else {
            throw BundleError("the model has no output \(manifest.outputName)")
        }
        return ((0..<logits.count).map { logits[$0].floatValue }, elapsed)
    }

    private func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }
}

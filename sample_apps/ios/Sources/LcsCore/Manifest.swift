import Foundation
#if canImport(CryptoKit)
import CryptoKit
#endif

// Reading a bundle's manifest.json as every sample app does (mirrors Manifest.kt): check the
// fields the app relies on, refuse a newer manifest version or another target, verify every
// listed file's sha256 (a .mlpackage is a directory: its digest is sha256 over
// "<relative path>\0<file sha256>\n" for every file, sorted by path), pick artifacts by kind.

/// A bundle the app cannot use; the message is meant for the screen.
public struct BundleError: Error, LocalizedError, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var errorDescription: String? { message }
}

public struct InputSpec {
    public let name: String
    public let shape: [Int?]
    public let layout: String
    public let pixelScale: Double
    public let mean: [Double]
    public let std: [Double]
    public var channels: Int { layout == "NCHW" ? shape[1]! : shape[3]! }
    public var height: Int { layout == "NCHW" ? shape[2]! : shape[1]! }
    public var width: Int { layout == "NCHW" ? shape[3]! : shape[2]! }
}

public struct Artifact {
    public let path: String
    public let kind: String
    public let alphas: [Double]
    public let sha256: String
    public let details: [String: Any]
    public var mode: String? { details["mode"] as? String }
}

public struct ManifestLevel {
    public let alpha: Double
    public let path: String
    public let sha256: String
    public let cost: Double
}

/// One choice for the picker and the policy: a function of a multifunction package, a level
/// package, or an alpha fed to the alpha-input program.
public enum LevelSource: Equatable {
    case function(package: String, name: String)
    case package(String)
    case alphaInput(program: String)
}

public struct Rung: Equatable {
    public let alpha: Double
    public let cost: Double
    public let source: LevelSource
}

public struct Manifest {
    public let json: [String: Any]
    public let targetName: String
    public let input: InputSpec
    public let outputName: String
    public let classes: [String]
    public let levels: [ManifestLevel]
    public let artifacts: [Artifact]
    public let alphaMin: Double
    public let alphaMax: Double
    public let discreteAlphas: [Double]?

    public func artifacts(ofKind kind: String) -> [Artifact] { artifacts.filter { $0.kind == kind } }

    /// Choices in ascending alpha. With `multifunction` (iOS 18) one package serves every level;
    /// else one package per level; a bundle with only the alpha-input program offers its discrete
    /// alphas or five across the range, with cost 1 - alpha standing in for an unmeasured cost.
    public func ladder(multifunction: Bool) -> [Rung] {
        if !levels.isEmpty {
            let sorted = levels.sorted { $0.alpha < $1.alpha }
            if multifunction, let package = artifacts(ofKind: "multifunction").first,
               let functions = package.details["functions"] as? [String: String] {
                let rungs = sorted.compactMap { level -> Rung? in
                    guard let name = functions.first(where: { abs((Double($0.key) ?? -1) - level.alpha) < 1e-9 })?.value else { return nil }
                    return Rung(alpha: level.alpha, cost: level.cost, source: .function(package: package.path, name: name))
                }
                if rungs.count == sorted.count { return rungs }
            }
            return sorted.map { Rung(alpha: $0.alpha, cost: $0.cost, source: .package($0.path)) }
        }
        guard let program = artifacts(ofKind: "alpha_input").first else { return [] }
        let alphas = discreteAlphas ?? (0...4).map { alphaMin + (alphaMax - alphaMin) * Double($0) / 4 }
        return alphas.sorted().map { Rung(alpha: $0, cost: max(1 - $0, 0.05), source: .alphaInput(program: program.path)) }
    }
}

public enum Bundles {
    public static let format = "lcs-bundle"
    public static let supportedVersion = 2
    static let kinds: Set<String> = ["level", "alpha_input", "alpha_weights", "alpha_predict", "multifunction"]

    /// Parse and check manifest text; throws BundleError naming the first problem.
    public static func parseManifest(_ data: Data) throws -> Manifest {
        guard let object = try? JSONSerialization.jsonObject(with: data), let root = object as? [String: Any] else {
            throw BundleError("manifest.json is not a valid JSON object")
        }
        let m = try Fields(root, "manifest.json")
        guard (root["format"] as? String) == format else {
            throw BundleError("manifest.json is not an lcs bundle manifest (format is not '\(format)')")
        }
        let version = try m.int("manifest_version")
        if version > supportedVersion {
            throw BundleError("manifest.json has version \(version), newer than this app reads (\(supportedVersion)): update the app")
        }
        for key in ["created_at", "created_by", "source", "alpha_input", "samples", "validation"] { _ = try m.required(key) }
        let input = try m.object("input")
        let layout = try input.string("layout")
        guard layout == "NCHW" || layout == "NHWC" else { throw BundleError("manifest.json: input.layout must be NCHW or NHWC") }
        let shape: [Int?] = try input.array("shape").enumerated().map { (i, e) -> Int? in
            if i == 0, e is String { return nil }
            guard let d = (e as? NSNumber)?.doubleValue, d == d.rounded() else { throw BundleError("manifest.json: input.shape[\(i)] must be an integer") }
            return Int(d)
        }
        guard shape.count == 4 else { throw BundleError("manifest.json: input.shape must have 4 dimensions") }
        let spec = InputSpec(name: try input.string("name"), shape: shape, layout: layout,
                             pixelScale: try input.number("pixel_scale"),
                             mean: try input.array("mean").map { try number($0, "input.mean") },
                             std: try input.array("std").map { try number($0, "input.std") })
        guard spec.mean.count == spec.channels, spec.std.count == spec.channels, spec.std.allSatisfy({ $0 > 0 }) else {
            throw BundleError("manifest.json: input.mean and input.std need \(spec.channels) values (std positive)")
        }
        let source = try m.object("source")
        let classes = try source.array("classes").compactMap { $0 as? String }
        guard !classes.isEmpty else { throw BundleError("manifest.json: source.classes is empty") }
        let alpha = try source.object("alpha")
        let levels = try m.array("levels").enumerated().map { i, e in try level(try Fields(e, "manifest.json: levels[\(i)]")) }
        let artifacts = try m.array("artifacts").enumerated().map { i, e in try artifact(try Fields(e, "manifest.json: artifacts[\(i)]")) }
        guard !artifacts.isEmpty else { throw BundleError("manifest.json lists no artifacts") }
        return Manifest(json: root, targetName: try m.object("target").string("name"), input: spec,
                        outputName: try m.object("output").string("name"), classes: classes, levels: levels,
                        artifacts: artifacts, alphaMin: try alpha.number("min"), alphaMax: try alpha.number("max"),
                        discreteAlphas: (alpha.json["discrete"] as? [NSNumber])?.map(\.doubleValue))
    }

    private static func number(_ e: Any, _ key: String) throws -> Double {
        guard let n = e as? NSNumber else { throw BundleError("manifest.json: \(key) must hold numbers") }
        return n.doubleValue
    }

    private static func file(_ f: Fields) throws -> (String, String) {
        let path = try f.string("path")
        if path.isEmpty || path.hasPrefix("/") || path.split(separator: "/").contains("..") {
            throw BundleError("\(f.location).path '\(path)' leaves the bundle")
        }
        let sha = try f.string("sha256")
        guard sha.count == 64, sha.allSatisfy({ "0123456789abcdef".contains($0) }) else {
            throw BundleError("\(f.location).sha256 is not a sha256 digest")
        }
        return (path, sha)
    }

    private static func level(_ f: Fields) throws -> ManifestLevel {
        let (path, sha) = try file(f)
        let alpha = try f.number("alpha")
        guard alpha >= 0, alpha <= 1 else { throw BundleError("\(f.location).alpha \(alpha) is outside [0, 1]") }
        let stats = f.json["stats"] as? [String: Any]
        let candidates = [stats?["nonzero_flops"], f.json["flops"], f.json["bytes"]]
        let cost = candidates.compactMap { ($0 as? NSNumber)?.doubleValue }.first { $0 > 0 && $0.isFinite } ?? 1
        return ManifestLevel(alpha: alpha, path: path, sha256: sha, cost: cost)
    }

    private static func artifact(_ f: Fields) throws -> Artifact {
        let (path, sha) = try file(f)
        let kind = try f.string("kind")
        guard kinds.contains(kind) else { throw BundleError("\(f.location).kind '\(kind)' is not a known kind") }
        return Artifact(path: path, kind: kind, alphas: try f.array("alphas").map { try number($0, "alphas") },
                        sha256: sha, details: try f.object("details").json)
    }

    /// Read, check and verify the bundle in `directory` for `target` ("coreml" here).
    public static func open(_ directory: URL, target: String) throws -> Manifest {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("manifest.json")) else {
            throw BundleError("the bundle has no manifest.json")
        }
        let manifest = try parseManifest(data)
        guard manifest.targetName == target else {
            throw BundleError("this is a \(manifest.targetName) bundle; this app runs \(target) bundles (export with lcs-export \(target))")
        }
        let listed = manifest.artifacts.map { ($0.path, $0.sha256) } + manifest.levels.map { ($0.path, $0.sha256) }
        for (path, sha) in listed {
            let url = directory.appendingPathComponent(path)
            guard FileManager.default.fileExists(atPath: url.path) else { throw BundleError("the bundle lists \(path) but it is missing") }
            guard try digest(of: url) == sha else { throw BundleError("\(path) does not match its sha256 in manifest.json (damaged or edited)") }
        }
        return manifest
    }

    /// sha256 of a file, or of a directory as the manifest defines it.
    public static func digest(of url: URL) throws -> String {
        var isDirectory: ObjCBool = false
        FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        if !isDirectory.boolValue { return hex(try Data(contentsOf: url)) }
        let base = url.standardizedFileURL.path
        var lines: [(String, String)] = []
        let enumerator = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.isRegularFileKey])
        while let file = enumerator?.nextObject() as? URL {
            guard (try? file.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true else { continue }
            let relative = String(file.standardizedFileURL.path.dropFirst(base.count + 1))
            lines.append((relative, hex(try Data(contentsOf: file))))
        }
        // Sorted by the path's bytes, as Python sorts str paths of ASCII names.
        let text = lines.sorted { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }.map { "\($0.0)\u{0}\($0.1)\n" }.joined()
        return hex(Data(text.utf8))
    }

    static func hex(_ data: Data) -> String {
        #if canImport(CryptoKit)
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        #else
        fatalError("sha256 needs CryptoKit")
        #endif
    }
}

/// Preprocessing from the manifest: value = ((pixel * pixel_scale) - mean[c]) / std[c].
public enum Preprocess {
    /// The model input (batch 1) from raw pixels, interleaved height x width x channels.
    public static func fromPixels(_ input: InputSpec, _ pixels: [Float], height: Int, width: Int, channels: Int) throws -> [Float] {
        guard height == input.height, width == input.width, channels == input.channels, pixels.count == height * width * channels else {
            throw BundleError("the image is \(width)x\(height) with \(channels) channel(s); the model takes \(input.width)x\(input.height) with \(input.channels)")
        }
        var out = [Float](repeating: 0, count: pixels.count)
        for y in 0..<height { for x in 0..<width { for c in 0..<channels {
            let value = (Double(pixels[(y * width + x) * channels + c]) * input.pixelScale - input.mean[c]) / input.std[c]
            let at = input.layout == "NCHW" ? (c * height + y) * width + x : (y * width + x) * channels + c
            out[at] = Float(value)
        } } }
        return out
    }

    /// Intensity in [0, 1] of one preprocessed value of channel c (to show a manifest sample).
    public static func toUnit(_ input: InputSpec, _ value: Float, channel c: Int) -> Float {
        Float(min(1, max(0, Double(value) * input.std[c] + input.mean[c])))
    }
}

/// Typed access to one JSON object, with errors naming the field.
struct Fields {
    let json: [String: Any]
    let location: String

    init(_ element: Any, _ location: String) throws {
        guard let object = element as? [String: Any] else { throw BundleError("\(location) is not an object") }
        json = object
        self.location = location
    }

    func required(_ key: String) throws -> Any {
        guard let value = json[key], !(value is NSNull) else { throw BundleError("\(location): \(key) is missing") }
        return value
    }
    func string(_ key: String) throws -> String {
        guard let s = try required(key) as? String else { throw BundleError("\(location): \(key) must be a string") }
        return s
    }
    func number(_ key: String) throws -> Double {
        guard let n = try required(key) as? NSNumber else { throw BundleError("\(location): \(key) must be a number") }
        return n.doubleValue
    }
    func int(_ key: String) throws -> Int {
        let d = try number(key)
        guard d == d.rounded() else { throw BundleError("\(location): \(key) must be an integer") }
        return Int(d)
    }
    func object(_ key: String) throws -> Fields {
        try Fields(try required(key), location.hasSuffix(".json") ? "\(location): \(key)" : "\(location).\(key)")
    }
    func array(_ key: String) throws -> [Any] {
        guard let a = try required(key) as? [Any] else { throw BundleError("\(location): \(key) must be an array") }
        return a
    }
}

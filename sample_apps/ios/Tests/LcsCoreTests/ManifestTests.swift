import Foundation
import XCTest
@testable import LcsCore

final class ManifestTests: XCTestCase {
    static let minimal = """
    {"format": "lcs-bundle", "manifest_version": 1, "created_at": "2026-01-01T00:00:00+00:00",
     "created_by": {"lcs": "0.1.0", "python": "3.11", "torch": "2.14"},
     "target": {"name": "coreml", "runtime": "coremltools", "options": {}},
     "source": {"checkpoint": {"path": "/x", "sha256": "\(String(repeating: "0", count: 64))", "bytes": 1},
                "model": {"name": "m"}, "method": {"name": "unstructured"}, "shape": "line",
                "alpha": {"min": 0, "max": 0.95, "discrete": null}, "classes": ["0", "1"], "data": {"dataset": "digits"}},
     "input": {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32", "layout": "NCHW",
               "pixel_scale": 0.0625, "mean": [0.3], "std": [0.4]},
     "output": {"name": "logits", "shape": ["batch", 2], "dtype": "float32"},
     "alpha_input": {"name": "alpha", "dtype": "float32", "shape": [1], "min": 0, "max": 0.95, "clamped": true},
     "levels": [], "artifacts": [%ARTIFACTS%],
     "samples": {"preprocessed": true, "images": [], "labels": [], "logits": [], "tolerance": 0.001},
     "validation": {"status": "not_run"}}
    """

    func bundle(_ files: [String: Data], manifest edit: (String) -> String = { $0 }) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var entries: [String] = []
        for (path, data) in files {
            try data.write(to: dir.appendingPathComponent(path))
            entries.append("""
            {"path": "\(path)", "kind": "level", "alphas": [0.5], "bytes": \(data.count), "gzip_bytes": 1,
             "sha256": "\(Bundles.hex(data))", "details": {}, "usage": null, "parity": []}
            """)
        }
        let text = edit(Self.minimal.replacingOccurrences(of: "%ARTIFACTS%", with: entries.joined(separator: ",")))
        try Data(text.utf8).write(to: dir.appendingPathComponent("manifest.json"))
        return dir
    }

    func message(_ body: () throws -> Void) -> String {
        do { try body(); return "accepted" } catch let error as BundleError { return error.message } catch { return "\(error)" }
    }

    func testReadsAValidBundle() throws {
        let manifest = try Bundles.open(try bundle(["a.mlmodel": Data([1, 2, 3])]), target: "coreml")
        XCTAssertEqual(manifest.input.width, 8)
        XCTAssertEqual(manifest.artifacts(ofKind: "level").count, 1)
    }

    func testRefusesTamperedMissingAndForeignBundles() throws {
        let dir = try bundle(["a.mlmodel": Data([1, 2, 3])])
        XCTAssertTrue(message { _ = try Bundles.open(dir, target: "onnx") }.contains("this app runs onnx bundles"))
        try Data([1, 2, 4]).write(to: dir.appendingPathComponent("a.mlmodel"))
        XCTAssertTrue(message { _ = try Bundles.open(dir, target: "coreml") }.contains("does not match its sha256"))
        try FileManager.default.removeItem(at: dir.appendingPathComponent("a.mlmodel"))
        XCTAssertTrue(message { _ = try Bundles.open(dir, target: "coreml") }.contains("is missing"))
        let newer = try bundle(["a.mlmodel": Data([1])]) { $0.replacingOccurrences(of: "\"manifest_version\": 1", with: "\"manifest_version\": 3") }
        XCTAssertTrue(message { _ = try Bundles.open(newer, target: "coreml") }.contains("newer than this app reads"))
    }

    func testPreprocessingFollowsTheManifest() throws {
        let spec = InputSpec(name: "input", shape: [nil, 2, 1, 2], layout: "NCHW", pixelScale: 0.5, mean: [0, 1], std: [1, 2])
        XCTAssertEqual(try Preprocess.fromPixels(spec, [2, 4, 6, 8], height: 1, width: 2, channels: 2), [1, 3, 0.5, 1.5])
        XCTAssertThrowsError(try Preprocess.fromPixels(spec, [Float](repeating: 0, count: 9), height: 3, width: 3, channels: 1))
    }
}

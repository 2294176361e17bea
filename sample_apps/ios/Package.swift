// swift-tools-version:5.9
// LcsCore: the level policy and bundle reading (platform-free, tested by `swift test` with the
// shared case table). LcsSampleApp: the SwiftUI app (Core ML, device signals) on top of it.
import PackageDescription

let package = Package(
    name: "LcsSample",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "LcsCore", targets: ["LcsCore"]),
        .executable(name: "LcsSampleApp", targets: ["LcsSampleApp"]),
    ],
    targets: [
        .target(name: "LcsCore", path: "Sources/LcsCore"),
        .executableTarget(name: "LcsSampleApp", dependencies: ["LcsCore"], path: "App"),
        .testTarget(name: "LcsCoreTests", dependencies: ["LcsCore"], path: "Tests/LcsCoreTests"),
    ]
)

import SwiftUI

@main
struct LcsSampleApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}

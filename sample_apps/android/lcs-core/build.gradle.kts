// Platform-free code: plain Kotlin/JVM, so its tests run without a device
// (`gradle :lcs-core:test` here, or ./test.sh with Debian's kotlinc and no Gradle).
plugins {
    id("org.jetbrains.kotlin.jvm")
    `java-library`
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    api("com.google.code.gson:gson:2.10.1") // Manifest exposes JsonObject details
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // The tests read the shared case table; LCS_SWITCH_ONCE_DIR, when set, is inherited.
    systemProperty("lcs.policyDir", file("../../policy").absolutePath)
}

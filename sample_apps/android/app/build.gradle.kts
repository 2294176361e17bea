plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "lcs.sample"
    compileSdk = 35

    defaultConfig {
        applicationId = "lcs.sample"
        minSdk = 29 // PowerManager.getCurrentThermalStatus
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
    androidResources {
        // Models are read whole into memory (sha256, byte patching); no compression to undo.
        noCompress += listOf("onnx")
    }
}

dependencies {
    implementation(project(":lcs-core"))
    implementation("com.microsoft.onnxruntime:onnxruntime-android:1.20.0")
}

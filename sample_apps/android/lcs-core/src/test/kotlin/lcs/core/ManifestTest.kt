package lcs.core

import com.google.gson.JsonArray
import com.google.gson.JsonObject
import com.google.gson.JsonParser
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.io.File
import java.nio.file.Files

/** Manifest reading and bundle verification, on a small hand-made bundle and on a real export. */
class ManifestTest {
    private fun bundleDir(files: Map<String, ByteArray>, edit: (JsonObject) -> Unit = {}): File {
        val dir = Files.createTempDirectory("lcs-bundle").toFile()
        dir.deleteOnExit()
        val artifacts = JsonArray()
        for ((path, bytes) in files) {
            File(dir, path).writeBytes(bytes)
            artifacts.add(JsonParser.parseString("""{"path": "$path", "kind": "level", "alphas": [0.5], "bytes": ${bytes.size},
                "gzip_bytes": 1, "sha256": "${Bundles.sha256(bytes)}", "details": {}, "usage": null, "parity": []}"""))
        }
        val manifest = JsonParser.parseString(MINIMAL).asJsonObject
        manifest.add("artifacts", artifacts)
        edit(manifest)
        File(dir, "manifest.json").writeText(manifest.toString())
        return dir
    }

    private fun refused(dir: File, target: String = "onnx"): String = try {
        Bundles.open(DirectorySource(dir), target)
        fail("the bundle was accepted"); ""
    } catch (error: BundleError) {
        error.message!!
    }

    @Test
    fun readsAValidBundle() {
        val bundle = Bundles.open(DirectorySource(bundleDir(mapOf("a.onnx" to byteArrayOf(1, 2, 3)))), "onnx")
        assertEquals(listOf(1, 1, 8, 8), bundle.manifest.input.shape.map { it ?: 1 })
        assertEquals(8, bundle.manifest.input.width)
        assertEquals(listOf("level"), bundle.manifest.artifacts.map { it.kind })
        assertEquals(3, bundle.bytes("a.onnx").size)
    }

    @Test
    fun refusesATamperedFile() {
        val dir = bundleDir(mapOf("a.onnx" to byteArrayOf(1, 2, 3)))
        File(dir, "a.onnx").writeBytes(byteArrayOf(1, 2, 4))
        assertTrue(refused(dir), refused(dir).contains("a.onnx does not match its sha256"))
    }

    @Test
    fun refusesAMissingFile() {
        val dir = bundleDir(mapOf("a.onnx" to byteArrayOf(1)))
        File(dir, "a.onnx").delete()
        assertTrue(refused(dir).contains("lists a.onnx but the file is missing"))
    }

    @Test
    fun refusesAnotherTargetsBundle() {
        val dir = bundleDir(mapOf("a.onnx" to byteArrayOf(1)))
        assertTrue(refused(dir, "coreml").contains("this is a onnx bundle; this app runs coreml bundles"))
    }

    @Test
    fun refusesANewerManifestVersion() {
        val dir = bundleDir(mapOf("a.onnx" to byteArrayOf(1))) { it.addProperty("manifest_version", 3) }
        assertTrue(refused(dir).contains("newer than this app reads"))
    }

    @Test
    fun refusesManifestsThatBreakTheSchema() {
        val breakers = mapOf<String, (JsonObject) -> Unit>(
            "format" to { m -> m.addProperty("format", "zip") },
            "input: mean is missing" to { m -> m.getAsJsonObject("input").remove("mean") },
            "artifacts[0].sha256 is not a sha256" to { m -> m.getAsJsonArray("artifacts")[0].asJsonObject.addProperty("sha256", "abc") },
            "artifacts[0].kind" to { m -> m.getAsJsonArray("artifacts")[0].asJsonObject.addProperty("kind", "apk") },
            "leaves the bundle" to { m -> m.getAsJsonArray("artifacts")[0].asJsonObject.addProperty("path", "../x.onnx") },
            "lists no artifacts" to { m -> m.add("artifacts", JsonArray()) },
            "validation is missing" to { m -> m.remove("validation") },
            "input.layout" to { m -> m.getAsJsonObject("input").addProperty("layout", "CHW") }
        )
        for ((expected, breaker) in breakers) {
            val message = refused(bundleDir(mapOf("a.onnx" to byteArrayOf(1)), breaker))
            assertTrue("'$message' should mention '$expected'", message.contains(expected))
        }
        try {
            Bundles.parseManifest("{not json")
            fail("accepted broken JSON")
        } catch (expected: BundleError) {
        }
    }

    @Test
    fun readsARealSwitchOnceExport() {
        val root = System.getenv("LCS_SWITCH_ONCE_DIR")?.takeIf { it.isNotEmpty() }
        assumeTrue("LCS_SWITCH_ONCE_DIR not set (tests/test_policy.py sets it)", root != null)
        val bundle = Bundles.open(DirectorySource(File(root, "bundle")), "onnx")
        val manifest = bundle.manifest
        val pair = manifest.switchOnce()
        assertNotNull(pair)
        assertEquals("alpha_weights", pair!!.weights.kind)
        assertEquals(manifest.json.getAsJsonArray("artifacts").map { it.asJsonObject }
            .first { it.get("path").asString == pair.predict.path }
            .getAsJsonObject("details").getAsJsonArray("constants").size(), pair.offsets.size)
        val ladder = manifest.ladder()
        assertEquals(manifest.levels.map { it.alpha }.sorted(), ladder.map { it.alpha })
        // Unstructured levels: the more compressed level has fewer non-zero FLOPs.
        assertTrue(ladder.first().cost > ladder.last().cost)
        // The policy accepts the ladder as the manifest gives it.
        val decision = Policy.decide(ladder.map { PolicyLevel(it.alpha, it.cost) }, Signals(0.0, thermal = "critical"), Policy.initialState())
        assertEquals(ladder.size - 1, decision.level)
        println("real bundle: ${manifest.artifacts.size} artifacts verified, ${pair.offsets.size} switch-once constants")
    }

    companion object {
        val MINIMAL = """{
          "format": "lcs-bundle", "manifest_version": 1, "created_at": "2026-01-01T00:00:00+00:00",
          "created_by": {"lcs": "0.1.0", "python": "3.11", "torch": "2.14"},
          "target": {"name": "onnx", "runtime": "onnxruntime", "options": {}},
          "source": {"checkpoint": {"path": "/x", "sha256": "${"0".repeat(64)}", "bytes": 1}, "model": {"name": "m"},
                     "method": {"name": "unstructured"}, "shape": "line", "alpha": {"min": 0, "max": 0.95, "discrete": null},
                     "classes": ["0", "1"], "data": {"dataset": "digits"}},
          "input": {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32", "layout": "NCHW",
                    "pixel_scale": 0.0625, "mean": [0.3], "std": [0.4]},
          "output": {"name": "logits", "shape": ["batch", 2], "dtype": "float32"},
          "alpha_input": {"name": "alpha", "dtype": "float32", "shape": [1], "min": 0, "max": 0.95, "clamped": true},
          "levels": [], "artifacts": [],
          "samples": {"preprocessed": true, "images": [], "labels": [], "logits": [], "tolerance": 0.001},
          "validation": {"status": "not_run"}
        }"""
    }
}

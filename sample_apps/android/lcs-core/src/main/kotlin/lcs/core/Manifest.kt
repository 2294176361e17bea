package lcs.core

import com.google.gson.JsonArray
import com.google.gson.JsonElement
import com.google.gson.JsonObject
import com.google.gson.JsonParser
import java.io.File
import java.security.MessageDigest

// Reading a bundle's manifest.json the same way on every platform: check the structure the app
// relies on (the parts of lcs_export/schemas/manifest.schema.json an app reads), refuse a newer
// manifest version or another target, verify every listed file's sha256, pick artifacts by kind.

/** A bundle the app cannot use; the message is meant for the screen. */
class BundleError(message: String) : Exception(message)

/** Where a bundle's files come from: a directory here, the APK's assets on Android. */
interface BundleSource {
    /** The whole file, or null when it does not exist. */
    fun read(path: String): ByteArray?
}

class DirectorySource(private val root: File) : BundleSource {
    override fun read(path: String): ByteArray? {
        val file = File(root, path)
        return if (file.isFile) file.readBytes() else null
    }
}

data class InputSpec(
    val name: String, val shape: List<Int?>, val layout: String,
    val pixelScale: Double, val mean: List<Double>, val std: List<Double>
) {
    val channels: Int get() = if (layout == "NCHW") shape[1]!! else shape[3]!!
    val height: Int get() = if (layout == "NCHW") shape[2]!! else shape[1]!!
    val width: Int get() = if (layout == "NCHW") shape[3]!! else shape[2]!!
}

data class Artifact(
    val path: String, val kind: String, val alphas: List<Double>, val sha256: String, val bytes: Long,
    val details: JsonObject
) {
    val mode: String? get() = details.get("mode")?.takeIf { it.isJsonPrimitive }?.asString
}

data class ManifestLevel(val alpha: Double, val path: String, val sha256: String, val cost: Double)

/** One choice the picker and the policy offer: a level file, or an alpha for the switch-once pair. */
data class Rung(val alpha: Double, val cost: Double, val levelPath: String?)

/** The switch-once pair: run [weights] once per switch, patch [predict] at [offsets]. */
data class SwitchOncePair(val weights: Artifact, val predict: Artifact, val offsets: List<ConstantOffset>)

class Manifest(
    val json: JsonObject, val targetName: String, val input: InputSpec, val outputName: String,
    val classes: List<String>, val levels: List<ManifestLevel>, val artifacts: List<Artifact>,
    val alphaMin: Double, val alphaMax: Double, val discreteAlphas: List<Double>?
) {
    fun artifactsOfKind(kind: String): List<Artifact> = artifacts.filter { it.kind == kind }

    /** The switch-once pair, or null when the bundle has none. */
    fun switchOnce(): SwitchOncePair? {
        // Kind alpha_predict since manifest version 2; version 1 listed it as alpha_input, mode switch_once.
        val predict = artifacts.firstOrNull { it.kind == "alpha_predict" || (it.kind == "alpha_input" && it.mode == "switch_once") }
            ?: return null
        val weightsPath = predict.details.get("weights_path")?.asString
        val weights = artifacts.firstOrNull { it.kind == "alpha_weights" && (weightsPath == null || it.path == weightsPath) }
            ?: throw BundleError("manifest.json: ${predict.path} is switch-once but the bundle lists no alpha_weights artifact")
        return SwitchOncePair(weights, predict, SwitchOnce.offsets(predict.details, "artifacts ${predict.path}"))
    }

    /**
     * The choices offered to the user and the policy, ascending alpha. Level files when the bundle
     * has them (cost: measured non-zero FLOPs, else FLOPs, else file bytes). A bundle with only the
     * switch-once pair offers its discrete alphas, or five evenly spaced alphas, with cost 1 - alpha
     * as a stand-in: the manifest measures no cost for an alpha-input graph.
     */
    fun ladder(): List<Rung> {
        if (levels.isNotEmpty()) return levels.sortedBy { it.alpha }.map { Rung(it.alpha, it.cost, it.path) }
        if (switchOnce() == null) return emptyList()
        val alphas = discreteAlphas ?: (0..4).map { alphaMin + (alphaMax - alphaMin) * it / 4.0 }
        return alphas.sorted().map { Rung(it, Math.max(1.0 - it, 0.05), null) }
    }
}

object Bundles {
    const val FORMAT = "lcs-bundle"
    const val SUPPORTED_VERSION = 2
    val KINDS = setOf("level", "alpha_input", "alpha_weights", "alpha_predict", "multifunction")
    private val SHA256 = Regex("^[0-9a-f]{64}$")

    fun sha256(bytes: ByteArray): String =
        MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { String.format("%02x", it) }

    /** Parse and check manifest text; throws BundleError naming the first problem. */
    fun parseManifest(text: String): Manifest {
        val root: JsonObject = try {
            val element = JsonParser.parseString(text)
            if (!element.isJsonObject) throw BundleError("manifest.json is not a JSON object")
            element.asJsonObject
        } catch (error: com.google.gson.JsonParseException) {
            throw BundleError("manifest.json is not valid JSON (${error.message})")
        }
        val m = Fields(root, "manifest.json")
        if (m.string("format") != FORMAT) throw BundleError("manifest.json is not an lcs bundle manifest (format is not '$FORMAT')")
        val version = m.int("manifest_version")
        if (version > SUPPORTED_VERSION) throw BundleError("manifest.json has version $version, newer than this app reads ($SUPPORTED_VERSION): update the app")
        if (version < 1) throw BundleError("manifest.json: manifest_version $version is not valid")
        for (key in listOf("created_at", "created_by", "source", "alpha_input", "samples", "validation")) m.required(key)
        val target = m.obj("target")
        val input = m.obj("input")
        val layout = input.string("layout")
        if (layout != "NCHW" && layout != "NHWC") throw BundleError("manifest.json: input.layout must be NCHW or NHWC, not $layout")
        val shape = input.array("shape").mapIndexed { i, e ->
            if (i == 0 && e.isJsonPrimitive && e.asJsonPrimitive.isString) null else input.intOf(e, "shape[$i]")
        }
        if (shape.size != 4) throw BundleError("manifest.json: input.shape must have 4 dimensions, has ${shape.size}")
        val spec = InputSpec(input.string("name"), shape, layout, input.number("pixel_scale"),
            input.array("mean").mapIndexed { i, e -> input.numberOf(e, "mean[$i]") },
            input.array("std").mapIndexed { i, e -> input.numberOf(e, "std[$i]") })
        if (spec.mean.size != spec.channels || spec.std.size != spec.channels || spec.std.any { it <= 0 })
            throw BundleError("manifest.json: input.mean and input.std need ${spec.channels} values (std positive)")
        val source = m.obj("source")
        val classes = source.array("classes").map { it.asString }
        if (classes.isEmpty()) throw BundleError("manifest.json: source.classes is empty")
        val alpha = source.obj("alpha")
        val discrete = alpha.json.get("discrete")?.takeIf { it.isJsonArray }?.asJsonArray?.map { it.asDouble }
        val levels = m.array("levels").mapIndexed { i, e -> level(Fields(e, "manifest.json: levels[$i]")) }
        val artifacts = m.array("artifacts").mapIndexed { i, e -> artifact(Fields(e, "manifest.json: artifacts[$i]")) }
        if (artifacts.isEmpty()) throw BundleError("manifest.json lists no artifacts")
        return Manifest(root, target.string("name"), spec, m.obj("output").string("name"), classes, levels, artifacts,
            alpha.number("min"), alpha.number("max"), discrete)
    }

    private fun file(f: Fields): Pair<String, String> {
        val path = f.string("path")
        if (path.isEmpty() || path.startsWith("/") || path.split('/').contains("..")) throw BundleError("${f.where}.path '$path' leaves the bundle")
        val sha = f.string("sha256")
        if (!SHA256.matches(sha)) throw BundleError("${f.where}.sha256 is not a sha256 digest")
        if (f.number("bytes") < 0) throw BundleError("${f.where}.bytes is negative")
        return Pair(path, sha)
    }

    private fun level(f: Fields): ManifestLevel {
        val (path, sha) = file(f)
        val alpha = f.number("alpha")
        if (alpha < 0 || alpha > 1) throw BundleError("${f.where}.alpha $alpha is outside [0, 1]")
        val stats = f.json.get("stats")?.takeIf { it.isJsonObject }?.asJsonObject
        val candidates = listOf(stats?.get("nonzero_flops"), f.json.get("flops"), f.json.get("bytes"))
        val cost = candidates.mapNotNull { e -> e?.takeIf { it.isJsonPrimitive && it.asJsonPrimitive.isNumber }?.asDouble }
            .firstOrNull { it > 0 && !it.isInfinite() } ?: 1.0
        return ManifestLevel(alpha, path, sha, cost)
    }

    private fun artifact(f: Fields): Artifact {
        val (path, sha) = file(f)
        val kind = f.string("kind")
        if (kind !in KINDS) throw BundleError("${f.where}.kind '$kind' is not one of $KINDS")
        return Artifact(path, kind, f.array("alphas").map { it.asDouble }, sha, f.number("bytes").toLong(), f.obj("details").json)
    }

    /**
     * Read, check and verify a bundle for [target] ("onnx" on Android and the web, "coreml" on iOS).
     * Every listed file is read once and its sha256 compared; the bytes are kept for the session.
     */
    fun open(source: BundleSource, target: String): OpenBundle {
        val text = source.read("manifest.json") ?: throw BundleError("the bundle has no manifest.json")
        val manifest = parseManifest(String(text, Charsets.UTF_8))
        if (manifest.targetName != target)
            throw BundleError("this is a ${manifest.targetName} bundle; this app runs $target bundles (export with lcs-export $target)")
        val files = HashMap<String, ByteArray>()
        val listed = manifest.artifacts.map { Pair(it.path, it.sha256) } + manifest.levels.map { Pair(it.path, it.sha256) }
        for ((path, sha) in listed) {
            if (files.containsKey(path)) continue
            val bytes = source.read(path) ?: throw BundleError("the bundle lists $path but the file is missing")
            if (sha256(bytes) != sha) throw BundleError("$path does not match its sha256 in manifest.json (damaged or edited)")
            files[path] = bytes
        }
        return OpenBundle(manifest, files)
    }
}

/** A verified bundle: its manifest and the bytes of every listed file. */
class OpenBundle(val manifest: Manifest, private val files: Map<String, ByteArray>) {
    fun bytes(path: String): ByteArray = files[path] ?: throw BundleError("$path is not a file of this bundle")
}

/** Typed access to one JSON object, with errors naming the field. */
internal class Fields(element: JsonElement, val where: String) {
    val json: JsonObject = if (element.isJsonObject) element.asJsonObject else throw BundleError("$where is not an object")

    fun required(key: String): JsonElement = json.get(key)?.takeIf { !it.isJsonNull } ?: throw BundleError("$where: $key is missing")
    fun string(key: String): String {
        val e = required(key)
        if (!e.isJsonPrimitive || !e.asJsonPrimitive.isString) throw BundleError("$where: $key must be a string")
        return e.asString
    }
    fun number(key: String): Double = numberOf(required(key), key)
    fun numberOf(e: JsonElement, key: String): Double {
        if (!e.isJsonPrimitive || !e.asJsonPrimitive.isNumber) throw BundleError("$where: $key must be a number")
        return e.asDouble
    }
    fun int(key: String): Int = intOf(required(key), key)
    fun intOf(e: JsonElement, key: String): Int {
        val d = numberOf(e, key)
        if (d != Math.floor(d)) throw BundleError("$where: $key must be an integer")
        return d.toInt()
    }
    fun obj(key: String): Fields = Fields(required(key), if (where.endsWith(".json")) "$where: $key" else "$where.$key")
    fun array(key: String): JsonArray {
        val e = required(key)
        if (!e.isJsonArray) throw BundleError("$where: $key must be an array")
        return e.asJsonArray
    }
}

package lcs.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.os.SystemClock
import lcs.core.BundleError
import lcs.core.OpenBundle
import lcs.core.Rung
import lcs.core.SwitchOnce
import java.nio.FloatBuffer

/**
 * Runs one level of a verified ONNX bundle and switches between levels: a level file opens a
 * session from its bytes; an alpha of the switch-once pair runs alpha_weights once, patches the
 * constants into a copy of alpha_predict's bytes (lcs-core, tested on the JVM) and opens that.
 * Not thread-safe: the activity calls it from one worker thread.
 */
class LevelEngine(private val bundle: OpenBundle) : AutoCloseable {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val manifest = bundle.manifest
    private val pair = manifest.switchOnce()
    private var weights: OrtSession? = null
    private var session: OrtSession? = null
    var rung: Rung? = null
        private set

    private fun options() = OrtSession.SessionOptions().apply { setIntraOpNumThreads(2) }

    /** Switch to [target]; returns the switch's cost in milliseconds. */
    fun switchTo(target: Rung): Double {
        val start = SystemClock.elapsedRealtimeNanos()
        val next = if (target.levelPath != null) {
            env.createSession(bundle.bytes(target.levelPath!!), options())
        } else {
            val switchPair = pair ?: throw BundleError("the bundle has no switch-once pair for alpha ${target.alpha}")
            // The weights graph is opened once, at the first switch-once switch.
            val weightsSession = weights ?: env.createSession(bundle.bytes(switchPair.weights.path), options()).also { weights = it }
            val alpha = OnnxTensor.createTensor(env, FloatBuffer.wrap(floatArrayOf(target.alpha.toFloat())), longArrayOf(1))
            val values = HashMap<String, FloatArray>()
            alpha.use {
                weightsSession.run(mapOf("alpha" to alpha)).use { result ->
                    for (offset in switchPair.offsets) {
                        val tensor = result.get(offset.name).orElseThrow { BundleError("alpha_weights has no output ${offset.name}") } as OnnxTensor
                        val buffer = tensor.floatBuffer
                        values[offset.name] = FloatArray(buffer.remaining()).also { buffer.get(it) }
                    }
                }
            }
            env.createSession(SwitchOnce.patch(bundle.bytes(switchPair.predict.path), switchPair.offsets, values), options())
        }
        session?.close()
        session = next
        rung = target
        return (SystemClock.elapsedRealtimeNanos() - start) / 1e6
    }

    /** Logits of one preprocessed image (batch 1) and the inference time in milliseconds. */
    fun predict(input: FloatArray): Pair<FloatArray, Double> {
        val session = session ?: throw IllegalStateException("no level loaded")
        val spec = manifest.input
        val shape = if (spec.layout == "NCHW") longArrayOf(1, spec.channels.toLong(), spec.height.toLong(), spec.width.toLong())
        else longArrayOf(1, spec.height.toLong(), spec.width.toLong(), spec.channels.toLong())
        OnnxTensor.createTensor(env, FloatBuffer.wrap(input), shape).use { tensor ->
            val start = SystemClock.elapsedRealtimeNanos()
            session.run(mapOf(spec.name to tensor)).use { result ->
                val elapsed = (SystemClock.elapsedRealtimeNanos() - start) / 1e6
                @Suppress("UNCHECKED_CAST")
                val logits = (result.get(0).value as Array<FloatArray>)[0]
                return Pair(logits, elapsed)
            }
        }
    }

    override fun close() {
        session?.close()
        weights?.close()
    }
}

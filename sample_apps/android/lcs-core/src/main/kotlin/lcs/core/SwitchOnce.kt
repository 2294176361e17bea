package lcs.core

import com.google.gson.JsonObject
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Where one alpha-dependent constant's raw bytes sit in alpha_predict.onnx. */
data class ConstantOffset(val name: String, val offset: Int, val bytes: Int, val dtype: String, val shape: List<Long>)

// The switch-once level change: alpha_weights.onnx computes every alpha-dependent constant once,
// and their little-endian bytes replace the constants' raw data inside a copy of
// alpha_predict.onnx's bytes at the offsets the manifest records; a session opened from those
// bytes then runs at a static level's speed. Same rule as targets/onnx/offsets.py patch_constants.
object SwitchOnce {
    /** The offsets table of a switch-once artifact's details. */
    fun offsets(details: JsonObject, where: String = "details"): List<ConstantOffset> {
        val table = details.get("constant_offsets")
        if (table == null || !table.isJsonArray) throw BundleError("manifest.json: $where has no constant_offsets table")
        return table.asJsonArray.mapIndexed { i, e ->
            val f = Fields(e, "manifest.json: $where constant_offsets[$i]")
            val offset = f.int("offset")
            val bytes = f.int("bytes")
            if (offset < 0 || bytes < 0) throw BundleError("${f.where}: offset and bytes must not be negative")
            ConstantOffset(f.string("name"), offset, bytes, f.string("dtype"), f.array("shape").map { it.asLong })
        }
    }

    /**
     * A patched copy of [predict]: every constant of [offsets] replaced by its float32 values from
     * [values] (the weights graph's outputs by name). The original array is left untouched, so the
     * app can switch again from the same file bytes.
     */
    fun patch(predict: ByteArray, offsets: List<ConstantOffset>, values: Map<String, FloatArray>): ByteArray {
        val patched = predict.copyOf()
        for (entry in offsets) {
            val floats = values[entry.name] ?: throw BundleError("the weights graph produced no output ${entry.name}")
            if (entry.dtype != "float32") throw BundleError("constant ${entry.name} is ${entry.dtype}; this app patches float32 constants only")
            if (floats.size * 4 != entry.bytes)
                throw BundleError("constant ${entry.name} has ${floats.size * 4} bytes, the predict graph expects ${entry.bytes}: use the weights and predict graphs of the same export")
            if (entry.offset.toLong() + entry.bytes > patched.size)
                throw BundleError("constant ${entry.name} lies past the end of the predict graph (offset ${entry.offset})")
            ByteBuffer.wrap(patched, entry.offset, entry.bytes).slice().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().put(floats)
        }
        return patched
    }
}

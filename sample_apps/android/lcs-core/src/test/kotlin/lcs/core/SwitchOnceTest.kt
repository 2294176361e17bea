package lcs.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Switch-once byte patching: by hand, and byte for byte against Python on a real export. */
class SwitchOnceTest {
    @Test
    fun writesLittleEndianFloatsAtTheOffsetAndLeavesTheRest() {
        val original = ByteArray(16) { it.toByte() }
        val patched = SwitchOnce.patch(original, listOf(ConstantOffset("w", 4, 8, "float32", listOf(2))),
            mapOf("w" to floatArrayOf(1.0f, -2.5f)))
        // 1.0f = 0x3F800000, -2.5f = 0xC0200000, little-endian.
        val expected = byteArrayOf(0, 1, 2, 3, 0, 0, 0x80.toByte(), 0x3F, 0, 0, 0x20, 0xC0.toByte(), 12, 13, 14, 15)
        assertArrayEquals(expected, patched)
        assertEquals(3.toByte(), original[3])
        assertEquals(4.toByte(), original[4]) // the file's own bytes stay as they were
    }

    @Test
    fun refusesValuesThatDoNotFit() {
        val offsets = listOf(ConstantOffset("w", 4, 8, "float32", listOf(2)))
        val bad = listOf(
            Pair(offsets, mapOf("w" to floatArrayOf(1f))),
            Pair(offsets, mapOf("v" to floatArrayOf(1f, 2f))),
            Pair(listOf(ConstantOffset("w", 12, 8, "float32", listOf(2))), mapOf("w" to floatArrayOf(1f, 2f))),
            Pair(listOf(ConstantOffset("w", 4, 8, "int64", listOf(1))), mapOf("w" to floatArrayOf(1f, 2f)))
        )
        for ((table, values) in bad) {
            try {
                SwitchOnce.patch(ByteArray(16), table, values)
                fail("patched $table with ${values.keys}")
            } catch (expected: BundleError) {
            }
        }
    }

    private fun floats(file: File): FloatArray {
        val buffer = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buffer.remaining()).also { buffer.get(it) }
    }

    @Test
    fun patchesExactlyLikePython() {
        val root = System.getenv("LCS_SWITCH_ONCE_DIR")?.takeIf { it.isNotEmpty() }
        assumeTrue("LCS_SWITCH_ONCE_DIR not set (tests/test_policy.py sets it)", root != null)
        val bundle = Bundles.open(DirectorySource(File(root, "bundle")), "onnx")
        val pair = bundle.manifest.switchOnce()!!
        val predict = bundle.bytes(pair.predict.path)
        val constants = pair.predict.details.getAsJsonArray("constants").map { it.asString }
        val alphas = File(root, "alphas.txt").readLines().filter { it.isNotBlank() }
        assertTrue(alphas.isNotEmpty())
        for (line in alphas) {
            val (key, alpha) = line.trim().split(" ")
            val dir = File(root, "alpha_$key")
            val values = constants.withIndex().associate { (i, name) -> name to floats(File(dir, "$i.f32")) }
            val patched = SwitchOnce.patch(predict, pair.offsets, values)
            val expected = File(dir, "expected.onnx").readBytes()
            assertEquals("size at alpha $alpha", expected.size, patched.size)
            val firstDifference = patched.indices.firstOrNull { patched[it] != expected[it] }
            assertEquals("first differing byte at alpha $alpha", null, firstDifference)
            if (alpha.toDouble() > 0) assertFalse("alpha $alpha changed no byte", patched.contentEquals(predict))
        }
        println("switch-once bytes: ${alphas.size} alphas identical to Python")
    }
}

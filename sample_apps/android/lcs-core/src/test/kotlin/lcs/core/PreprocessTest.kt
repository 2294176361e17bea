package lcs.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test

class PreprocessTest {
    private val spec = InputSpec("input", listOf(null, 2, 1, 2), "NCHW", 0.5, listOf(0.0, 1.0), listOf(1.0, 2.0))

    @Test
    fun appliesTheManifestFormulaPerChannelInItsLayout() {
        // Pixels interleaved HWC: (x0: c0=2, c1=4), (x1: c0=6, c1=8).
        val input = Preprocess.fromPixels(spec, floatArrayOf(2f, 4f, 6f, 8f), 1, 2, 2)
        // c0: (p * 0.5 - 0) / 1 ; c1: (p * 0.5 - 1) / 2; NCHW puts channel 0 first.
        assertArrayEquals(floatArrayOf(1f, 3f, 0.5f, 1.5f), input, 1e-6f)
        val nhwc = Preprocess.fromPixels(spec.copy(layout = "NHWC", shape = listOf(null, 1, 2, 2)), floatArrayOf(2f, 4f, 6f, 8f), 1, 2, 2)
        assertArrayEquals(floatArrayOf(1f, 0.5f, 3f, 1.5f), nhwc, 1e-6f)
        assertEquals(0.5f, Preprocess.toUnit(spec, -0.25f, 1), 1e-6f)
        assertEquals(1.0f, Preprocess.toUnit(spec, 0.25f, 1), 1e-6f) // 1.5 is clamped to full intensity
    }

    @Test
    fun refusesAnImageOfTheWrongSize() {
        try {
            Preprocess.fromPixels(spec, FloatArray(9), 3, 3, 1)
            fail("accepted a 3x3 image")
        } catch (error: BundleError) {
            assertEquals(true, error.message!!.contains("the model takes 2x1 with 2"))
        }
    }
}

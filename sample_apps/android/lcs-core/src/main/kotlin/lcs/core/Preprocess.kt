package lcs.core

// Preprocessing from the manifest, never from constants in the app:
// value = ((pixel * pixel_scale) - mean[c]) / std[c], laid out as the manifest's input.layout.

object Preprocess {
    /**
     * The model input (batch 1) from raw pixels in the dataset's own units, interleaved
     * height x width x channels (what a bitmap gives). Throws BundleError when the image is not
     * the size the model takes.
     */
    fun fromPixels(input: InputSpec, pixels: FloatArray, height: Int, width: Int, channels: Int): FloatArray {
        if (height != input.height || width != input.width || channels != input.channels)
            throw BundleError("the image is ${width}x$height with $channels channel(s); the model takes ${input.width}x${input.height} with ${input.channels}")
        if (pixels.size != height * width * channels) throw BundleError("the image has ${pixels.size} values, expected ${height * width * channels}")
        val out = FloatArray(pixels.size)
        for (y in 0 until height) for (x in 0 until width) for (c in 0 until channels) {
            val value = ((pixels[(y * width + x) * channels + c] * input.pixelScale) - input.mean[c]) / input.std[c]
            val at = if (input.layout == "NCHW") (c * height + y) * width + x else (y * width + x) * channels + c
            out[at] = value.toFloat()
        }
        return out
    }

    /** Raw pixels from intensities in [0, 1] (a drawn bitmap): pixel = intensity / pixel_scale. */
    fun fromUnit(input: InputSpec, unit: FloatArray, height: Int, width: Int, channels: Int): FloatArray =
        fromPixels(input, FloatArray(unit.size) { (unit[it] / input.pixelScale).toFloat() }, height, width, channels)

    /** Intensity in [0, 1] of one preprocessed value of channel [c], for showing a manifest sample. */
    fun toUnit(input: InputSpec, value: Float, c: Int): Float =
        Math.min(1.0, Math.max(0.0, value * input.std[c] + input.mean[c])).toFloat()
}

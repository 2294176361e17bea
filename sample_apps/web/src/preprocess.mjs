// Preprocessing from the manifest's input spec (never constants in the app):
// x = ((pixel * pixel_scale) - mean[c]) / std[c], NCHW, float32.

/** [C, H, W] of the manifest's input shape ["batch", C, H, W]. */
export function imageShape(spec) {
  const [, channels, height, width] = spec.shape;
  return { channels, height, width };
}

/**
 * Normalise an image given as intensities in [0, 1] (what `pixel * pixel_scale` yields for
 * the training data: pixel_scale maps the dataset's raw pixel range onto [0, 1]).
 * @param {Float32Array|number[]} intensities C*H*W values, channel-major (CHW)
 * @param {object} spec manifest.input
 * @returns {Float32Array} the model input for one image
 */
export function normalise(intensities, spec) {
  const { channels, height, width } = imageShape(spec);
  const plane = height * width;
  if (intensities.length !== channels * plane) {
    throw new Error(`the image has ${intensities.length} values; the bundle's input is ${channels}x${height}x${width} (${channels * plane})`);
  }
  const out = new Float32Array(intensities.length);
  for (let c = 0; c < channels; c++) {
    const mean = spec.mean[c];
    const std = spec.std[c];
    for (let i = c * plane; i < (c + 1) * plane; i++) out[i] = (intensities[i] - mean) / std;
  }
  return out;
}

/**
 * Intensities in [0, 1] (CHW) from RGBA canvas pixels already resized to the input size.
 * One channel: the luminance; three: R, G, B.
 * @param {Uint8ClampedArray} rgba width*height*4 bytes
 * @param {object} spec manifest.input
 * @returns {Float32Array}
 */
export function intensitiesFromRgba(rgba, spec) {
  const { channels, height, width } = imageShape(spec);
  const plane = height * width;
  if (rgba.length !== plane * 4) {
    throw new Error(`the picture is ${rgba.length / 4} pixels; the bundle's input is ${width}x${height}`);
  }
  if (channels !== 1 && channels !== 3) throw new Error(`the web app draws 1- or 3-channel images, not ${channels}`);
  const out = new Float32Array(channels * plane);
  for (let i = 0; i < plane; i++) {
    const r = rgba[4 * i] / 255, g = rgba[4 * i + 1] / 255, b = rgba[4 * i + 2] / 255;
    if (channels === 1) out[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    else { out[i] = r; out[plane + i] = g; out[2 * plane + i] = b; }
  }
  return out;
}

/**
 * A manifest sample image (already preprocessed, nested [C][H][W]) as a flat Float32Array.
 * @param {number[][][]} image
 * @param {object} spec manifest.input
 */
export function flattenSample(image, spec) {
  const { channels, height, width } = imageShape(spec);
  const flat = Float32Array.from(image.flat(2));
  if (image.length !== channels || flat.length !== channels * height * width) {
    throw new Error(`a sample image has ${flat.length} values; the bundle's input is ${channels}x${height}x${width}`);
  }
  return flat;
}

/** Undo the normalisation for display: intensities in [0, 1] (clamped), CHW. */
export function denormalise(input, spec) {
  const { channels, height, width } = imageShape(spec);
  const plane = height * width;
  const out = new Float32Array(input.length);
  for (let c = 0; c < channels; c++) {
    for (let i = c * plane; i < (c + 1) * plane; i++) {
      out[i] = Math.min(1, Math.max(0, input[i] * spec.std[c] + spec.mean[c]));
    }
  }
  return out;
}

/** Index of the largest logit. */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Softmax probabilities of logits (for display). */
export function softmax(values) {
  const top = Math.max(...values);
  const exps = Array.from(values, (v) => Math.exp(v - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

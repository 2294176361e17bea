// Preprocessing follows the manifest's input spec.

import assert from "node:assert/strict";
import { test } from "node:test";

import { argmax, denormalise, flattenSample, intensitiesFromRgba, normalise } from "../src/preprocess.mjs";

const GRAY = { shape: ["batch", 1, 2, 2], mean: [0.5], std: [0.25], pixel_scale: 1 / 255, layout: "NCHW" };
const RGB = { shape: ["batch", 3, 1, 2], mean: [0.1, 0.2, 0.3], std: [1, 2, 4], pixel_scale: 1 / 255, layout: "NCHW" };

test("normalise subtracts the channel mean and divides by the channel std", () => {
  assert.deepEqual([...normalise([0, 0.5, 1, 0.75], GRAY)], [-2, 0, 2, 1]);
  const out = normalise([0.1, 0.1, 0.2, 1.2, 0.3, 4.3], RGB);
  assert.deepEqual([...out].map((v) => Math.round(v * 1e6) / 1e6), [0, 0, 0, 0.5, 0, 1]);
});

test("an image of the wrong size is refused with the expected size", () => {
  assert.throws(() => normalise([0, 0, 0], GRAY), /3 values; the bundle's input is 1x2x2 \(4\)/);
  assert.throws(() => intensitiesFromRgba(new Uint8ClampedArray(12), GRAY), /3 pixels; the bundle's input is 2x2/);
  assert.throws(() => flattenSample([[[0, 0, 0]]], GRAY), /3 values; the bundle's input is 1x2x2/);
});

test("canvas pixels become luminance (1 channel) or planes (3 channels) in [0, 1]", () => {
  const white = new Uint8ClampedArray([255, 255, 255, 255, 0, 0, 0, 255, 255, 0, 0, 255, 0, 0, 255, 255]);
  const gray = intensitiesFromRgba(white, GRAY);
  assert.ok(Math.abs(gray[0] - 1) < 1e-6 && gray[1] === 0 && Math.abs(gray[2] - 0.299) < 1e-6 && Math.abs(gray[3] - 0.114) < 1e-6);
  const planes = intensitiesFromRgba(new Uint8ClampedArray([255, 0, 51, 255, 0, 255, 0, 255]), RGB);
  assert.deepEqual([...planes].map((v) => Math.round(v * 100) / 100), [1, 0, 0, 1, 0.2, 0]);
});

test("denormalise inverts normalise (clamped to [0, 1]) and argmax picks the top logit", () => {
  const input = [0, 0.25, 0.5, 1];
  assert.deepEqual([...denormalise(normalise(input, GRAY), GRAY)], input);
  assert.equal(argmax([0.1, 3, -2, 2.9]), 1);
});

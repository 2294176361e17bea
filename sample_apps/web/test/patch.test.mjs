// Switch-once byte patching: pure checks, then against the bytes Python wrote for one alpha.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as ort from "onnxruntime-web";

import { Engine } from "../src/engine.mjs";
import { constantValues, patchConstants } from "../src/patch.mjs";
import { NO_FIXTURE, fixture, readBundle } from "./helpers.mjs";

const OFFSETS = [
  { name: "a", offset: 2, bytes: 8, dtype: "float32", shape: [2] },
  { name: "b", offset: 12, bytes: 4, dtype: "float32", shape: [1] },
];

test("patchConstants writes each value's little-endian bytes at its offset and nothing else", () => {
  const original = new Uint8Array(20).fill(7);
  const patched = patchConstants(original, OFFSETS, { a: Float32Array.of(1, -2), b: Float32Array.of(0.5) });
  const view = new DataView(patched.buffer);
  assert.equal(view.getFloat32(2, true), 1);
  assert.equal(view.getFloat32(6, true), -2);
  assert.equal(view.getFloat32(12, true), 0.5);
  assert.deepEqual([...patched.slice(0, 2), ...patched.slice(10, 12), ...patched.slice(16)], Array(8).fill(7));
  assert.deepEqual([...original], Array(20).fill(7), "the shipped bytes stay as they were");
});

test("patchConstants refuses a value of the wrong size, a missing value and an offset past the end", () => {
  const bytes = new Uint8Array(20);
  assert.throws(() => patchConstants(bytes, OFFSETS, { a: Float32Array.of(1), b: Float32Array.of(0) }), /a has 4 bytes.*holds 8/);
  assert.throws(() => patchConstants(bytes, OFFSETS, { a: Float32Array.of(1, 2) }), /no value for constant b/);
  assert.throws(() => patchConstants(bytes, [{ name: "c", offset: 18, bytes: 4, dtype: "float32" }], { c: Float32Array.of(1) }),
    /outside alpha_predict/);
  assert.throws(() => patchConstants(bytes, [{ name: "c", offset: 0, bytes: 4, dtype: "float32" }], { c: Int16Array.of(1, 2) }),
    /float32 in the predict graph/);
});

test("constantValues refuses an output of another type than the offsets table", () => {
  const outputs = { a: { type: "int64", data: BigInt64Array.of(1n) } };
  assert.throws(() => constantValues(outputs, [OFFSETS[0]]), /a is int64; the predict graph expects float32/);
  assert.throws(() => constantValues({}, [OFFSETS[0]]), /no output named a/);
});

test("JavaScript patches the same bytes as Python for the same alpha", { skip: fixture() ? false : NO_FIXTURE }, () => {
  const f = fixture();
  const { manifest, files } = readBundle(join(f.directory, "bundle"));
  const weights = manifest.artifacts.find((a) => a.kind === "alpha_weights");
  const offsets = weights.details.constant_offsets;
  const raw = readFileSync(join(f.directory, f.values_file));
  const values = new Map();
  let position = 0;
  for (const entry of offsets) {
    values.set(entry.name, new Float32Array(raw.buffer.slice(raw.byteOffset + position, raw.byteOffset + position + entry.bytes)));
    position += entry.bytes;
  }
  assert.equal(position, raw.byteLength);
  const patched = patchConstants(files.get(weights.details.predict_path), offsets, values);
  const expected = new Uint8Array(readFileSync(join(f.directory, f.patched_file)));
  assert.equal(patched.byteLength, expected.byteLength);
  assert.ok(Buffer.from(patched).equals(Buffer.from(expected)), "patched bytes differ from Python's");
  assert.ok(!Buffer.from(patched).equals(Buffer.from(files.get(weights.details.predict_path))), "alpha changed no byte");
});

test("a switch-once switch in onnxruntime-web reproduces PyTorch at that alpha", { skip: fixture() ? false : NO_FIXTURE }, async () => {
  const f = fixture();
  const bundle = readBundle(join(f.directory, "bundle"));
  const engine = new Engine(ort, bundle);
  await engine.select({ path: "switch_once", alpha: f.alpha });
  const images = bundle.manifest.samples.images;
  const { logits } = await engine.run(Float32Array.from(images.flat(3)), images.length);
  let worst = 0;
  logits.forEach((row, i) => row.forEach((v, k) => { worst = Math.max(worst, Math.abs(v - f.reference_logits[i][k])); }));
  assert.ok(worst <= 1e-4, `max |logit - PyTorch's| = ${worst}`);
});

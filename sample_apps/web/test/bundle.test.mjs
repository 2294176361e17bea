// Bundle checks: the manifest's version, schema and target, and every artifact's presence
// and sha256, against a real bundle exported by Python (tests/test_web_app.py).

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";

import { levelsFromManifest } from "../../policy/policy.mjs";
import { BundleError, alphaLevels, checkManifest, loadBundle, makeSchemaValidator, sha256Hex, switchingPaths } from "../src/bundle.mjs";
import { Ajv2020, NO_FIXTURE, SCHEMA, fetchFrom, fixture, readBundle, withManifest } from "./helpers.mjs";

const BASE = "http://bundle.test/";
const validateSchema = makeSchemaValidator(Ajv2020, SCHEMA);
const skip = fixture() ? false : NO_FIXTURE;

async function refusal(files) {
  try {
    await loadBundle(BASE, { fetch: fetchFrom(BASE, files), validateSchema });
  } catch (error) {
    assert.ok(error instanceof BundleError, `expected a BundleError, got ${error}`);
    assert.ok(error.hint.length > 0, "every refusal carries a fix");
    return error;
  }
  assert.fail("the bundle was accepted");
}

test("sha256Hex is SHA-256", async () => {
  assert.equal(await sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
});

test("something that is not an lcs manifest is refused before the schema", () => {
  assert.throws(() => checkManifest([1, 2], validateSchema), (e) => e instanceof BundleError && /not an lcs bundle manifest/.test(e.message));
  assert.throws(() => checkManifest({ format: "other" }, validateSchema), /not an lcs bundle manifest/);
});

test("a real bundle loads: every artifact fetched and checked", { skip }, async () => {
  const { manifest, files } = readBundle(join(fixture().directory, "bundle"));
  const bundle = await loadBundle(BASE, { fetch: fetchFrom(BASE, files), validateSchema });
  assert.deepEqual([...bundle.files.keys()], manifest.artifacts.map((a) => a.path));
  assert.deepEqual(switchingPaths(manifest), ["levels", "switch_once", "alpha_input"]);
  const levels = levelsFromManifest(manifest); // what the app gives the policy
  assert.deepEqual(levels.map((l) => l.alpha), [0, 0.5, 0.9]);
  assert.ok(levels[0].cost > levels[1].cost && levels[1].cost > levels[2].cost, "sparser levels cost less");
});

test("a manifest from a newer lcs is refused as newer, not as a schema failure", { skip }, async () => {
  const { manifest, files } = readBundle(join(fixture().directory, "bundle"));
  const error = await refusal(withManifest(files, { ...manifest, manifest_version: 3, new_field: true }));
  assert.match(error.message, /manifest version 3; this app reads version 2 at most/);
});

test("a Core ML bundle is refused: the web app runs ONNX", { skip }, async () => {
  const { manifest, files } = readBundle(join(fixture().directory, "bundle"));
  const error = await refusal(withManifest(files, { ...manifest, target: { ...manifest.target, name: "coreml" } }));
  assert.match(error.message, /is a coreml bundle; the web app runs ONNX bundles/);
  assert.match(error.hint, /lcs-export onnx/);
});

test("a manifest that fails the schema names the field", { skip }, async () => {
  const { manifest, files } = readBundle(join(fixture().directory, "bundle"));
  const broken = structuredClone(manifest);
  broken.artifacts[1].sha256 = "not-a-digest";
  const error = await refusal(withManifest(files, broken));
  assert.match(error.message, /does not match the lcs bundle schema at artifacts\/1\/sha256/);
  const missing = structuredClone(manifest);
  delete missing.input;
  assert.match((await refusal(withManifest(files, missing))).message, /schema at \(top level\): must have required property 'input'/);
});

test("a sample image of the wrong size is refused before anything runs", { skip }, async () => {
  const { manifest, files } = readBundle(join(fixture().directory, "bundle"));
  const broken = structuredClone(manifest);
  broken.samples.images[1] = broken.samples.images[1].map((plane) => plane.slice(1));
  assert.match((await refusal(withManifest(files, broken))).message, /sample image 1 is 1x7x8; the bundle's input is 1x8x8/);
});

test("a missing artifact and a changed artifact are refused by name", { skip }, async () => {
  const { manifest, files } = readBundle(join(fixture().directory, "bundle"));
  const path = manifest.artifacts[2].path;
  const without = new Map(files);
  without.delete(path);
  assert.match((await refusal(without)).message, new RegExp(`lists ${path.replace(".", "\\.")} but the bundle has no such file`));
  const changed = new Map(files);
  const bytes = files.get(path).slice();
  bytes[bytes.length - 1] ^= 1;
  changed.set(path, bytes);
  assert.match((await refusal(changed)).message, new RegExp(`${path.replace(".", "\\.")} does not match the manifest: sha256`));
});

test("a bundle without level files offers discrete alphas or five across the range, cost 1 - alpha", () => {
  const spaced = alphaLevels({ levels: [], alpha_input: { min: 0, max: 0.8, discrete: null } });
  assert.deepEqual(spaced.map((l) => l.alpha), [0, 0.2, 0.4, 0.6000000000000001, 0.8]);
  assert.deepEqual(spaced.map((l) => Math.round(l.cost * 100) / 100), [1, 0.8, 0.6, 0.4, 0.2]);
  const discrete = alphaLevels({ levels: [], alpha_input: { min: 0, max: 1, discrete: [1, 0, 0.6] } });
  assert.deepEqual(discrete, [{ alpha: 0, cost: 1 }, { alpha: 0.6, cost: 0.4 }, { alpha: 1, cost: 0.05 }]);
});

// Test helpers: a fetch over a directory (node's fetch has no file: URLs) and the fixture
// that tests/test_web_app.py writes (a real bundle plus the bytes Python patched).

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
export const REPO = join(here, "..", "..", "..");
export const SCHEMA = JSON.parse(readFileSync(join(REPO, "lcs_export", "schemas", "manifest.schema.json"), "utf8"));
export const Ajv2020 = createRequire(import.meta.url)("ajv-dist/dist/ajv2020.min.js").default;

/** The fixture directory from LCS_WEB_FIXTURE, or null when the tests run on their own. */
export function fixture() {
  const directory = process.env.LCS_WEB_FIXTURE;
  if (!directory || !existsSync(join(directory, "fixture.json"))) return null;
  return { directory, ...JSON.parse(readFileSync(join(directory, "fixture.json"), "utf8")) };
}

/** Why a fixture test is skipped when run without pytest (pytest always sets it). */
export const NO_FIXTURE = "needs LCS_WEB_FIXTURE: run through pytest tests/test_web_app.py";

/**
 * fetch() over files: `files` maps a path under `baseUrl` to bytes (missing -> 404).
 * @param {string} baseUrl e.g. "http://bundle.test/"
 * @param {Map<string, Uint8Array>} files
 */
export function fetchFrom(baseUrl, files) {
  return async (url) => {
    const path = url.startsWith(baseUrl) ? url.slice(baseUrl.length) : url;
    const bytes = files.get(path);
    if (bytes === undefined) return { ok: false, status: 404 };
    return {
      ok: true, status: 200,
      text: async () => new TextDecoder().decode(bytes),
      arrayBuffer: async () => bytes.slice().buffer,
    };
  };
}

/** Every file of a bundle directory (manifest and artifacts) as a Map path -> bytes. */
export function readBundle(directory) {
  const manifest = JSON.parse(readFileSync(join(directory, "manifest.json"), "utf8"));
  const files = new Map([["manifest.json", new Uint8Array(readFileSync(join(directory, "manifest.json")))]]);
  for (const entry of manifest.artifacts) files.set(entry.path, new Uint8Array(readFileSync(join(directory, entry.path))));
  return { manifest, files };
}

/** A copy of `files` with manifest.json replaced by `manifest`. */
export function withManifest(files, manifest) {
  const copy = new Map(files);
  copy.set("manifest.json", new TextEncoder().encode(JSON.stringify(manifest)));
  return copy;
}

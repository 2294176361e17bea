// Reading an lcs bundle in a browser (or in node): manifest checks, sha256 of every artifact,
// and the facts the app needs (levels with their cost, which ways of switching exist).
// Pure code: fetch, the JSON Schema validator and SHA-256 are passed in, so the same
// functions run under `node --test` and in the page.

/** The newest manifest_version this app understands (lcs_export/manifest.py MANIFEST_VERSION). */
export const SUPPORTED_MANIFEST_VERSION = 2;

/** A bundle the app refuses: `message` says what is wrong with which input, `hint` the fix. */
export class BundleError extends Error {
  /**
   * @param {string} message what is wrong, naming the file or field
   * @param {string} hint what the user should do about it
   */
  constructor(message, hint) {
    super(message);
    this.name = "BundleError";
    this.hint = hint;
  }
}

/**
 * Build a schema validator from Ajv's draft 2020-12 class (the `ajv2020` UMD bundle of
 * ajv-dist: `window.ajv2020` in a page, `require("ajv-dist/dist/ajv2020.min.js")` in node).
 * @param {Function} Ajv2020 the Ajv2020 class
 * @param {object} schema lcs_export/schemas/manifest.schema.json
 * @returns {(manifest: object) => string|null} null when valid, else the first error as text
 */
export function makeSchemaValidator(Ajv2020, schema) {
  // strict: false because the schema carries annotations (description) next to keywords
  // in places Ajv's strict mode flags; the constraints are all standard.
  const ajv = new Ajv2020({ allErrors: false, strict: false });
  const validate = ajv.compile(schema);
  return (manifest) => {
    if (validate(manifest)) return null;
    const error = validate.errors[0];
    const where = error.instancePath ? error.instancePath.slice(1) : "(top level)";
    const extra = error.params && error.params.additionalProperty ? ` (${error.params.additionalProperty})` : "";
    return `${where}: ${error.message}${extra}`;
  };
}

/**
 * Check a parsed manifest before any artifact is fetched. Throws BundleError.
 * Order matters: a newer manifest version is reported as such, not as a schema failure.
 * @param {object} manifest parsed manifest.json
 * @param {(manifest: object) => string|null} validateSchema from makeSchemaValidator
 * @param {string} source where the manifest came from, for messages
 */
export function checkManifest(manifest, validateSchema, source = "manifest.json") {
  if (manifest === null || typeof manifest !== "object" || manifest.format !== "lcs-bundle") {
    throw new BundleError(`${source} is not an lcs bundle manifest`,
      "point the app at a directory written by lcs-export (its -o/--out)");
  }
  const version = manifest.manifest_version;
  if (typeof version === "number" && version > SUPPORTED_MANIFEST_VERSION) {
    throw new BundleError(
      `${source} has manifest version ${version}; this app reads version ${SUPPORTED_MANIFEST_VERSION} at most`,
      "update the app (run lcs-export app again with the lcs that wrote the bundle)");
  }
  const problem = validateSchema(manifest);
  if (problem !== null) {
    throw new BundleError(`${source} does not match the lcs bundle schema at ${problem}`,
      "re-export the bundle with lcs-export");
  }
  if (manifest.target.name !== "onnx") {
    throw new BundleError(
      `${source} is a ${manifest.target.name} bundle; the web app runs ONNX bundles`,
      "export one with lcs-export onnx CHECKPOINT --levels 0.0,0.5,0.9 --dynamic-alpha -o DIR");
  }
  const spec = manifest.input;
  if (spec.layout !== "NCHW" || spec.shape.length !== 4) {
    throw new BundleError(`${source} describes a ${spec.layout} input of shape [${spec.shape}]; the web app feeds NCHW images`,
      "export an image classifier bundle with lcs-export");
  }
  if (spec.mean.length !== spec.shape[1] || spec.std.length !== spec.shape[1]) {
    throw new BundleError(`${source} gives ${spec.mean.length} means and ${spec.std.length} stds for ${spec.shape[1]} channels`,
      "re-export the bundle with lcs-export");
  }
  const [, channels, height, width] = spec.shape;
  manifest.samples.images.forEach((image, i) => {
    const size = [image.length, image[0]?.length, image[0]?.[0]?.length];
    if (size[0] !== channels || size[1] !== height || size[2] !== width || image.flat(2).length !== channels * height * width) {
      throw new BundleError(`${source}: sample image ${i} is ${size.join("x")}; the bundle's input is ${channels}x${height}x${width}`,
        "re-export the bundle with lcs-export");
    }
  });
  const bySha = new Map(manifest.artifacts.map((a) => [a.path, a.sha256]));
  for (const level of manifest.levels) {
    if (bySha.has(level.path) && bySha.get(level.path) !== level.sha256) {
      throw new BundleError(`${source}: level ${level.alpha} lists ${level.path} with another sha256 than its artifact entry`,
        "re-export the bundle with lcs-export");
    }
  }
}

/**
 * Hex SHA-256 of bytes with SubtleCrypto (browsers in a secure context, node >= 19).
 * @param {Uint8Array} bytes
 * @returns {Promise<string>}
 */
export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    throw new BundleError("this page cannot check sha256 (SubtleCrypto is missing outside a secure context)",
      "open the app from http://127.0.0.1 or http://localhost, or serve it over https");
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Fetch and check a bundle: manifest (parsed, version, schema, target) then every artifact
 * (present, sha256 as listed). Nothing is returned unless everything checks.
 * @param {string} baseUrl the bundle directory's URL, ending in "/"
 * @param {{fetch: Function, validateSchema: Function, onProgress?: Function}} deps
 * @returns {Promise<{manifest: object, baseUrl: string, files: Map<string, Uint8Array>}>}
 */
export async function loadBundle(baseUrl, { fetch, validateSchema, onProgress = () => {} }) {
  const manifestUrl = new URL("manifest.json", baseUrl).href;
  const response = await fetchOrExplain(fetch, manifestUrl, "manifest.json");
  let manifest;
  try {
    manifest = JSON.parse(await response.text());
  } catch (error) {
    throw new BundleError(`${manifestUrl} is not valid JSON (${error.message})`, "re-export the bundle with lcs-export");
  }
  checkManifest(manifest, validateSchema, manifestUrl);
  const files = new Map();
  for (const [index, entry] of manifest.artifacts.entries()) {
    onProgress(`checking ${entry.path} (${index + 1} of ${manifest.artifacts.length})`);
    const bytes = new Uint8Array(await (await fetchOrExplain(fetch, new URL(entry.path, baseUrl).href, entry.path)).arrayBuffer());
    const actual = await sha256Hex(bytes);
    if (actual !== entry.sha256) {
      throw new BundleError(
        `${entry.path} does not match the manifest: sha256 ${actual.slice(0, 16)}... where ${entry.sha256.slice(0, 16)}... is listed`,
        "the file was changed or damaged after export; copy the bundle again or re-export it");
    }
    files.set(entry.path, bytes);
  }
  return { manifest, baseUrl, files };
}

async function fetchOrExplain(fetch, url, name) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new BundleError(`could not fetch ${name} from ${url} (${error.message})`, "serve the app with lcs-export app ... --serve");
  }
  if (response.status === 404) {
    throw new BundleError(`the manifest lists ${name} but the bundle has no such file (${url}: 404)`,
      "copy the whole bundle directory, or re-export it");
  }
  if (!response.ok) {
    throw new BundleError(`fetching ${name} from ${url} failed with HTTP ${response.status}`, "check the server serving the app");
  }
  return response;
}

/**
 * The switch-once inference graph: kind `alpha_predict` since manifest version 2; version 1
 * listed it as `alpha_input` with `details.mode` "switch_once".
 */
export function switchOncePredict(manifest) {
  return manifest.artifacts.filter((a) => a.kind === "alpha_predict"
    || (a.kind === "alpha_input" && a.details.mode === "switch_once"));
}

/** The artifacts of one kind (and, for alpha_input, one mode). */
export function artifactsOfKind(manifest, kind, mode = null) {
  return manifest.artifacts.filter((a) => a.kind === kind && (mode === null || a.details.mode === mode));
}

/**
 * Ways this bundle can switch level, in the order the app offers them:
 * "levels" (one file per level), "switch_once" (alpha_weights + alpha_predict),
 * "alpha_input" (one graph fed alpha with every call).
 * @returns {string[]}
 */
export function switchingPaths(manifest) {
  const paths = [];
  if (manifest.levels.length > 0 && artifactsOfKind(manifest, "level").length > 0) paths.push("levels");
  const weights = artifactsOfKind(manifest, "alpha_weights");
  if (weights.length > 0 && switchOncePredict(manifest).length > 0) paths.push("switch_once");
  if (artifactsOfKind(manifest, "alpha_input", "single_graph").length > 0) paths.push("alpha_input");
  return paths;
}

/**
 * The levels a bundle without level files offers (picker and auto mode), as the shared policy
 * takes them: its discrete alphas, or five evenly spaced alphas, with `max(1 - alpha, 0.05)`
 * standing in for a cost the manifest does not measure for alpha-input graphs (the Android app
 * does the same). Bundles with level files use the policy's own `levelsFromManifest`.
 * @returns {{alpha: number, cost: number}[]}
 */
export function alphaLevels(manifest) {
  const { min, max, discrete } = manifest.alpha_input;
  const alphas = discrete && discrete.length > 0 ? [...discrete].sort((a, b) => a - b)
    : [0, 1, 2, 3, 4].map((i) => min + ((max - min) * i) / 4);
  return alphas.map((alpha) => ({ alpha, cost: Math.max(1 - alpha, 0.05) }));
}

/**
 * PyTorch's logits for the manifest's sample images at `alpha`, or null when the manifest
 * has none recorded for that alpha.
 */
export function sampleLogitsAt(manifest, alpha) {
  const entry = manifest.samples.logits.find((l) => Math.abs(l.alpha - alpha) < 1e-6);
  return entry ? entry.values : null;
}

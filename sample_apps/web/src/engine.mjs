// Running a checked bundle with onnxruntime-web, in the three ways a bundle can switch level:
//   "levels"      one file per level: a switch opens another session;
//   "switch_once" alpha_weights.onnx runs once per switch, its outputs are patched into
//                 alpha_predict.onnx's bytes and a session is opened from them;
//   "alpha_input" one graph fed alpha with every call: a switch is free, every call slower.
// `ort` is passed in (the page's onnxruntime-web module, or the same package under node).

import { artifactsOfKind } from "./bundle.mjs";
import { constantValues, patchConstants } from "./patch.mjs";

const now = () => globalThis.performance.now();

export class Engine {
  /**
   * @param {object} ort the onnxruntime-web module
   * @param {{manifest: object, files: Map<string, Uint8Array>}} bundle from loadBundle
   * @param {object} sessionOptions passed to every InferenceSession.create
   */
  constructor(ort, bundle, sessionOptions = {}) {
    this.ort = ort;
    this.manifest = bundle.manifest;
    this.files = bundle.files;
    this.sessionOptions = { executionProviders: ["wasm"], graphOptimizationLevel: "all", ...sessionOptions };
    this.inputName = this.manifest.input.name;
    this.outputName = this.manifest.output.name;
    this.alphaName = this.manifest.alpha_input.name;
    this.session = null;
    this.weightsSession = null; // switch-once: opened once, reused by every switch
    this.singleGraph = null; // alpha_input: opened once
    this.current = null; // {path, alpha, level}
  }

  async open(bytes) {
    return this.ort.InferenceSession.create(bytes, this.sessionOptions);
  }

  async replaceSession(session) {
    const old = this.session;
    this.session = session;
    if (old && old !== this.singleGraph) await old.release();
  }

  /**
   * Switch to a level file, a switch-once alpha or an alpha of the single graph.
   * @param {{path: "levels"|"switch_once"|"alpha_input", alpha: number, level?: number}} choice
   *        `level` indexes manifest.levels (levels path); alpha is used by the other two
   * @returns {Promise<{ms: number, detail: object}>} the wall time of the switch
   */
  async select(choice) {
    const start = now();
    let detail = {};
    if (choice.path === "levels") {
      const level = this.manifest.levels[choice.level];
      if (!level) throw new Error(`the bundle has no level ${choice.level}`);
      await this.replaceSession(await this.open(this.files.get(level.path)));
      this.current = { path: "levels", level: choice.level, alpha: level.alpha };
      detail = { file: level.path };
    } else if (choice.path === "switch_once") {
      detail = await this.switchOnce(choice.alpha);
      this.current = { path: "switch_once", level: choice.level ?? null, alpha: choice.alpha };
    } else if (choice.path === "alpha_input") {
      if (!this.singleGraph) {
        const [entry] = artifactsOfKind(this.manifest, "alpha_input", "single_graph");
        this.singleGraph = await this.open(this.files.get(entry.path));
      }
      await this.replaceSession(this.singleGraph);
      this.current = { path: "alpha_input", level: choice.level ?? null, alpha: choice.alpha };
    } else {
      throw new Error(`unknown switching path ${choice.path}`);
    }
    return { ms: now() - start, detail };
  }

  /** Run the weights graph at alpha and open the predict graph from patched bytes. */
  async switchOnce(alpha) {
    const [weightsEntry] = artifactsOfKind(this.manifest, "alpha_weights");
    const predictPath = weightsEntry.details.predict_path;
    const offsets = weightsEntry.details.constant_offsets;
    if (!this.weightsSession) this.weightsSession = await this.open(this.files.get(weightsEntry.path));
    const t0 = now();
    const feeds = { [this.alphaName]: new this.ort.Tensor("float32", Float32Array.of(alpha), [1]) };
    const outputs = await this.weightsSession.run(feeds);
    const t1 = now();
    const patched = patchConstants(this.files.get(predictPath), offsets, constantValues(outputs, offsets));
    for (const tensor of Object.values(outputs)) tensor.dispose?.();
    const t2 = now();
    await this.replaceSession(await this.open(patched));
    return { weights_ms: t1 - t0, patch_ms: t2 - t1, session_ms: now() - t2 };
  }

  /**
   * Classify a batch. Returns the logits per image and the wall time of the run call.
   * @param {Float32Array} data batch * C * H * W preprocessed values
   * @param {number} batch
   * @returns {Promise<{logits: Float32Array[], ms: number}>}
   */
  async run(data, batch = 1) {
    if (!this.session) throw new Error("no level selected yet");
    const [, c, h, w] = this.manifest.input.shape;
    const feeds = { [this.inputName]: new this.ort.Tensor("float32", data, [batch, c, h, w]) };
    if (this.current.path === "alpha_input") {
      feeds[this.alphaName] = new this.ort.Tensor("float32", Float32Array.of(this.current.alpha), [1]);
    }
    const start = now();
    const outputs = await this.session.run(feeds);
    const ms = now() - start;
    const flat = outputs[this.outputName].data;
    const classes = flat.length / batch;
    const logits = [];
    for (let i = 0; i < batch; i++) logits.push(Float32Array.from(flat.subarray(i * classes, (i + 1) * classes)));
    return { logits, ms };
  }
}

// Switch-once byte patching: the alpha-dependent constants computed by alpha_weights.onnx are
// written into a copy of alpha_predict.onnx's bytes at the offsets the manifest records
// (details.constant_offsets), and a new session is opened from those bytes. The runtime then
// sees ordinary constant weights and optimises them like a static level's.
// Pure code, no runtime: tested in node against the bytes Python writes for the same alpha.

/** Bytes per element of the dtypes an offsets table may name (numpy names). */
const ELEMENT_BYTES = { float32: 4, float16: 2, float64: 8, int64: 8, int32: 4, int8: 1, uint8: 1, bool: 1 };

/** ONNX Runtime tensor type names that carry each numpy dtype. */
const ORT_TYPES = { float32: "float32", float16: "float16", float64: "float64", int64: "int64", int32: "int32",
  int8: "int8", uint8: "uint8", bool: "bool" };

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The little-endian bytes of a typed array (the ONNX raw_data layout).
 * @param {ArrayBufferView} values
 * @returns {Uint8Array}
 */
export function rawBytes(values) {
  if (!LITTLE_ENDIAN) {
    // Every browser and phone CPU in use is little-endian; refuse rather than write wrong bytes.
    throw new Error("this host is big-endian; switch-once patching writes little-endian raw tensor data");
  }
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * A copy of `predictBytes` with each constant's raw data replaced.
 * @param {Uint8Array} predictBytes alpha_predict.onnx as shipped
 * @param {{name: string, offset: number, bytes: number, dtype: string}[]} offsets details.constant_offsets
 * @param {Map<string, ArrayBufferView>|Object<string, ArrayBufferView>} values constant name -> typed array
 * @returns {Uint8Array} new bytes; `predictBytes` is left unchanged
 */
export function patchConstants(predictBytes, offsets, values) {
  const lookup = values instanceof Map ? (name) => values.get(name) : (name) => values[name];
  const patched = new Uint8Array(predictBytes);
  for (const entry of offsets) {
    const value = lookup(entry.name);
    if (value === undefined) {
      throw new Error(`alpha_weights produced no value for constant ${entry.name}; use the weights and predict graphs of one export`);
    }
    if (ELEMENT_BYTES[entry.dtype] !== undefined && value.BYTES_PER_ELEMENT !== undefined
        && value.BYTES_PER_ELEMENT !== ELEMENT_BYTES[entry.dtype]) {
      throw new Error(`constant ${entry.name} is ${entry.dtype} in the predict graph but its value has ${value.BYTES_PER_ELEMENT}-byte elements`);
    }
    const raw = rawBytes(value);
    if (raw.byteLength !== entry.bytes) {
      throw new Error(`constant ${entry.name} has ${raw.byteLength} bytes; the predict graph holds ${entry.bytes} at offset ${entry.offset}`);
    }
    if (entry.offset < 0 || entry.offset + entry.bytes > patched.byteLength) {
      throw new Error(`constant ${entry.name} lies outside alpha_predict.onnx (offset ${entry.offset}, ${entry.bytes} bytes)`);
    }
    patched.set(raw, entry.offset);
  }
  return patched;
}

/**
 * The weights graph's outputs as typed arrays by name, checked against the offsets table.
 * @param {Object<string, {type: string, data: ArrayBufferView}>} outputs session.run() result
 * @param {{name: string, dtype: string}[]} offsets details.constant_offsets
 * @returns {Map<string, ArrayBufferView>}
 */
export function constantValues(outputs, offsets) {
  const values = new Map();
  for (const entry of offsets) {
    const tensor = outputs[entry.name];
    if (!tensor) throw new Error(`alpha_weights.onnx has no output named ${entry.name}`);
    if (ORT_TYPES[entry.dtype] && tensor.type !== ORT_TYPES[entry.dtype]) {
      throw new Error(`alpha_weights output ${entry.name} is ${tensor.type}; the predict graph expects ${entry.dtype}`);
    }
    values.set(entry.name, tensor.data);
  }
  return values;
}

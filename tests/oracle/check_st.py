#!/usr/bin/env python3
"""check_st.py — the pip `safetensors` library (+ numpy, ml_dtypes) as an
independent reader of what rlrun writes. Called by the C tests (tests/test_convert*.c,
tests/test_safetensors*.c) and by tests/gpu/run.sh.

  check_st.py dump PATH
      PATH is a .safetensors file or a model directory (index + shards, or
      model.safetensors). Opens every file with the safetensors library, checks an
      index's weight_map against the shards and its total_size against the sum of
      tensor bytes, and prints one line per tensor, sorted:
          NAME|DTYPE|D0,D1,...|SHA256
      then `meta KEY=VALUE` lines (single files). Exit 1 on any problem.

  check_st.py verify ORIG QUANT FORMAT [ROUNDTRIP]
      ORIG: the model directory (BF16, F16 or F32 tensors); QUANT: rlrun convert --to
      FORMAT of it; ROUNDTRIP (optional): rlrun convert --to bf16 of QUANT. Re-derives in
      numpy, independently of rlrun, every scale from the original's values (F32 as is,
      F16/BF16 widened; FORMATS.md rules), requires the data and scale bytes to equal
      those of the numpy quantizers of ci_quant.py applied to the same values (byte for
      byte), checks each dequantized element against the format's bound, checks that
      unquantized floating-point tensors are BF16 (the original's bytes when it is BF16,
      else its RNE rounding) and other tensors byte-identical, and that ROUNDTRIP equals
      numpy's own dequantization bit for bit. Prints `ok FORMAT: N quantized, M kept,
      worst error/bound R` or the failures.

Error bounds per element (x original, s or d the block's dequant scale):
  fp8-block, mxfp8: |x^ - x| <= 2^-4 |x| + 2^-10 s   (E4M3: 3 mantissa bits, RNE; subnormal step 2^-9)
  nvfp4:            |x^ - x| <= 0.25 |x| + 0.25 d + 6 * 2^-10 * S_dec   (E2M1 steps 0.5/1/2; d = sb * S_dec)
"""
import hashlib
import json
import os
import sys

import ml_dtypes
import numpy as np
import safetensors
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ci_quant  # noqa: E402  (the numpy quantizers written from FORMATS.md)

NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
      "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
      "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
      "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "F8_E8M0": np.uint8}


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def read_file(path):
    """name -> (dtype, shape, bytes) through the safetensors library; and metadata."""
    with open(path, "rb") as f:
        raw = f.read()
    out = {name: (v["dtype"], list(v["shape"]), bytes(v["data"]))
           for name, v in safetensors.deserialize(raw)}
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        if sorted(f.keys()) != sorted(out):
            fail("%s: safe_open and deserialize disagree on the tensor names" % path)
    return out, meta


def read_any(path):
    """A file, or a directory with an index or model.safetensors."""
    if not os.path.isdir(path):
        return read_file(path)
    ipath = os.path.join(path, "model.safetensors.index.json")
    if not os.path.exists(ipath):
        return read_file(os.path.join(path, "model.safetensors"))
    with open(ipath) as f:
        idx = json.load(f)
    wm = idx["weight_map"]
    tensors, total = {}, 0
    for shard in sorted(set(wm.values())):
        t, _ = read_file(os.path.join(path, shard))
        for name, v in t.items():
            if wm.get(name) != shard:
                fail("%s: %s holds %s but weight_map says %s" % (ipath, shard, name, wm.get(name)))
            tensors[name] = v
            total += len(v[2])
    if set(wm) != set(tensors):
        fail("%s: weight_map names %d tensors, the shards hold %d" % (ipath, len(wm), len(tensors)))
    if idx["metadata"]["total_size"] != total:
        fail("%s: total_size %s but the tensors hold %d bytes" % (ipath, idx["metadata"]["total_size"], total))
    return tensors, {}


def dump(path):
    tensors, meta = read_any(path)
    for name in sorted(tensors):
        dt, shape, data = tensors[name]
        print("%s|%s|%s|%s" % (name, dt, ",".join(map(str, shape)), hashlib.sha256(data).hexdigest()))
    for k in sorted(meta):
        print("meta %s=%s" % (k, meta[k]))


def arr(t):
    dt, shape, data = t
    return np.frombuffer(data, dtype=NP[dt]).reshape(shape)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def e2m1(codes):
    lut = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)
    return lut[codes]


def check_fp8(name, x, q, s, ue8m0, quant, fmt):
    """x original FP32 [N,K]; q E4M3 [N,K]; s FP32 block scales. Returns (x^, worst ratio)."""
    N, K = x.shape
    bs = (128, 128) if fmt == "fp8-block" else (1, 32)
    for bi in range(s.shape[0]):
        for bj in range(s.shape[1]):
            blk = x[bi * bs[0]:(bi + 1) * bs[0], bj * bs[1]:(bj + 1) * bs[1]]
            amax = np.float32(np.max(np.abs(blk)))
            if fmt == "fp8-block":
                want = np.float32(1.0) if amax == 0 else np.float32(amax / np.float32(448.0))
                if ue8m0 and amax != 0:
                    want = rceil_pow2(want)
            else:
                want = rceil_pow2(np.float32(amax / np.float32(448.0))) if amax != 0 else np.float32(2.0 ** -127)
            if s[bi, bj] != want:
                fail("%s: scale[%d,%d] = %r, numpy derives %r from amax %r" % (name, bi, bj, s[bi, bj], want, amax))
    sf = np.repeat(np.repeat(s, bs[0], 0), bs[1], 1)[:N, :K]
    xh = f32(q.astype(np.float32)) * sf
    bound = 2.0 ** -4 * np.abs(x.astype(np.float64)) + 2.0 ** -10 * sf + 1e-6 * np.abs(x) + 1e-45
    err = np.abs(xh.astype(np.float64) - x)
    return xh, float(np.max(err / bound))


def rceil_pow2(v):
    """2^e with e the RCEIL exponent of FP32 v (v > 0): the smallest power of two >= v."""
    bits = np.array([v], dtype=np.float32).view(np.uint32)[0]
    e = int(bits >> 23) + (1 if bits & 0x7FFFFF else 0)
    e = min(max(e, 0), 254)
    return np.float32(np.ldexp(1.0, e - 127))


FLOATS = ("BF16", "F32", "F16")


def kept_bytes(t):
    """What an unquantized tensor must become: BF16 (RNE) for a floating-point one."""
    if t[0] not in FLOATS:
        return t
    b = f32(arr(t)).astype(ml_dtypes.bfloat16)
    return ("BF16", t[1], b.tobytes())


def same_bytes(name, what, got, want):
    """Fail naming the first differing byte (and how many differ) of two byte arrays."""
    g = np.frombuffer(got, np.uint8) if isinstance(got, bytes) else np.ascontiguousarray(got).view(np.uint8).ravel()
    w = np.frombuffer(want, np.uint8) if isinstance(want, bytes) else np.ascontiguousarray(want).view(np.uint8).ravel()
    if g.size != w.size:
        fail("%s: %s has %d bytes, numpy's reference %d" % (name, what, g.size, w.size))
    bad = np.flatnonzero(g != w)
    if bad.size:
        fail("%s: %s differs from numpy's reference in %d of %d bytes, first at byte %d: %#04x vs %#04x"
             % (name, what, bad.size, g.size, bad[0], g[bad[0]], w[bad[0]]))


def verify(orig, quant, fmt, rt=None):
    ot, _ = read_any(orig)
    qt, _ = read_any(quant)
    rtt = read_any(rt)[0] if rt else None
    with open(os.path.join(quant, "config.json")) as f:
        qc = json.load(f).get("quantization_config")
    ue8m0 = bool(qc and qc.get("scale_fmt") == "ue8m0" and fmt == "fp8-block")
    sfx = ".weight_scale" if fmt == "nvfp4" else ".weight_scale_inv"
    n_q, n_kept, worst = 0, 0, 0.0
    for name, t in sorted(ot.items()):
        if name not in qt:
            fail("%s missing from %s" % (name, quant))
        x = f32(arr(t)) if t[0] in FLOATS else None   # the source values (F16/BF16 widened exactly)
        base = name[:-len(".weight")] if name.endswith(".weight") else None
        if base is None or base + sfx not in qt:        # kept
            want = kept_bytes(t)
            if qt[name][0] != want[0] or qt[name][1] != want[1]:
                fail("%s: kept %s %s became %s %s, want %s" % (name, t[0], t[1], qt[name][0], qt[name][1], want[0]))
            if qt[name][2] != want[2]:
                fail("%s: kept tensor's bytes differ from %s" % (name, "its BF16 (RNE) rounding" if t[0] in ("F32", "F16") else "the original"))
            if rtt is not None and rtt[name][2] != want[2]:
                fail("%s: round trip changed a kept tensor" % name)
            n_kept += 1
            continue
        n_q += 1
        q = arr(qt[name])
        if fmt in ("fp8-block", "mxfp8"):
            sc = arr(qt[base + ".weight_scale_inv"])
            s = f32(sc) if fmt == "fp8-block" else np.ldexp(np.float32(1.0), sc.astype(np.int32) - 127).astype(np.float32)
            xh, r = check_fp8(name, x, q, s, ue8m0, qt, fmt)
            wq, ws = ci_quant.fp8_block(x, 128, ue8m0) if fmt == "fp8-block" else ci_quant.mxfp8(x)
            same_bytes(name, "the E4M3 data", qt[name][2], wq)
            same_bytes(name, "weight_scale_inv", qt[base + ".weight_scale_inv"][2], ws)
        else:
            sb = arr(qt[base + ".weight_scale"]).astype(np.float32)
            sdec = np.float32(arr(qt[base + ".weight_scale_2"]).reshape(-1)[0])
            partner = None
            if base.endswith("gate_proj"):
                partner = base[:-len("gate_proj")] + "up_proj"
            elif base.endswith("up_proj"):
                partner = base[:-len("up_proj")] + "gate_proj"
            amax = np.float32(np.max(np.abs(x)))
            if partner and partner + ".weight" in ot:
                amax = max(amax, np.float32(np.max(np.abs(f32(arr(ot[partner + ".weight"]))))))
                if arr(qt[partner + ".weight_scale_2"]).reshape(-1)[0] != sdec:
                    fail("%s: gate/up weight_scale_2 differ" % base)
            want = np.float32(1.0) / (np.float32(448.0 * 6.0) / amax) if amax else np.float32(1.0)
            if sdec != want:
                fail("%s: weight_scale_2 %r, numpy derives %r" % (name, sdec, want))
            wq, ws, wsdec = ci_quant.nvfp4(x, np.float32(amax))
            same_bytes(name, "the packed E2M1 data", qt[name][2], wq)
            same_bytes(name, "weight_scale", qt[base + ".weight_scale"][2], ws)
            same_bytes(name, "weight_scale_2", qt[base + ".weight_scale_2"][2], np.array([wsdec], np.float32))
            same_bytes(name, "input_scale", qt[base + ".input_scale"][2], np.array([1.0], np.float32))
            N, K = x.shape
            codes = np.empty((N, K), np.uint8)
            codes[:, 0::2] = q & 0xF
            codes[:, 1::2] = q >> 4
            d = np.repeat(sb, 16, 1)[:, :K]
            xh = (e2m1(codes) * d) * sdec
            bound = 0.25 * np.abs(x.astype(np.float64)) + 0.25 * d * sdec + 6 * 2.0 ** -10 * sdec + 1e-6 * np.abs(x) + 1e-45
            r = float(np.max(np.abs(xh.astype(np.float64) - x) / bound))
        worst = max(worst, r)
        if r > 1.0:
            fail("%s: dequantized error exceeds the %s bound by %.3fx" % (name, fmt, r))
        if rtt is not None:
            got = arr(rtt[name]).view(np.uint16)
            want = xh.astype(ml_dtypes.bfloat16).view(np.uint16)
            if not np.array_equal(got, want):
                i = np.argwhere(got != want)[0]
                fail("%s: round trip differs from numpy's dequantization at %s: %#x vs %#x" % (name, tuple(i), got[tuple(i)], want[tuple(i)]))
    print("ok %s: %d quantized, %d kept, worst error/bound %.3f" % (fmt, n_q, n_kept, worst))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()

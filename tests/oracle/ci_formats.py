#!/usr/bin/env python3
"""ci_formats.py — oracle tables for the element codecs (kernels/formats.h),
computed with numpy + ml_dtypes, independently of the C code.

Writes into OUT/formats/ (raw little-endian arrays):
  bf16_e4m3.u8     E4M3 code of every BF16 bit pattern 0..65535 (as FP32)
  bf16_e2m1.u8     E2M1 code (low nibble) of every BF16 bit pattern
  e4m3_decode.f32  FP32 value of every E4M3 code 0..255
  e2m1_decode.f32  FP32 value of every E2M1 code 0..15
  e8m0_decode.f32  FP32 value of every E8M0 code 0..255
  rceil_in.f32 / rceil_out.u8   E8M0 RCEIL exponents: every power-of-two boundary
                   2^k (k = -149..127) and its ±1 ulp neighbours, then 1M random
                   positive finite FP32 values
  bf16_in.f32 / bf16_out.u16    FP32 → BF16 RNE on boundaries + 1M random bit patterns

ml_dtypes rounds to nearest-even but does not saturate, so values are clipped
to ±max first (FORMATS.md); NaN follows the contract (E4M3: 0x7F|sign, E2M1: 0).
ml_dtypes' E8M0 cast rounds to nearest, so RCEIL is computed from frexp and
cross-checked against ml_dtypes' exact E8M0 decode.
"""
import argparse
import os

import ml_dtypes
import numpy as np

F32 = np.float32


def e4m3_encode(v):
    """FP32 array → E4M3 codes: RNE, satfinite, NaN → 0x7F|sign."""
    v = np.asarray(v, F32)
    with np.errstate(invalid="ignore"):
        c = np.clip(v, F32(-448), F32(448)).astype(ml_dtypes.float8_e4m3fn).view(np.uint8).copy()
    nan = np.isnan(v)
    sign = (v.view(np.uint32) >> 31).astype(np.uint8) << 7
    c[nan] = (0x7F | sign[nan]).astype(np.uint8)
    return c


def e2m1_encode(v):
    """FP32 array → E2M1 codes (0..15): RNE, satfinite, NaN → 0."""
    v = np.asarray(v, F32)
    with np.errstate(invalid="ignore"):
        c = np.clip(v, F32(-6), F32(6)).astype(ml_dtypes.float4_e2m1fn).view(np.uint8).copy()
    c &= 0x0F
    c[np.isnan(v)] = 0
    return c


def rceil(v):
    """E8M0 RCEIL exponent of FP32 values v >= 0 (FORMATS.md, MXFP8): the biased
    exponent of v plus 1 when its mantissa is non-zero, clamped to [0, 254];
    computed here from frexp: a normal v = m·2^ex (m in [0.5, 1)) has biased
    exponent ex - 1 + 127; an FP32 subnormal has biased exponent 0."""
    v = np.asarray(v, F32)
    m, ex = np.frexp(v.astype(np.float64))
    normal = v >= F32(2.0 ** -126)
    biased = np.where(normal, ex - 1 + 127, 0)
    mant_nonzero = np.where(normal, m != 0.5, v != 0)
    e = np.clip(biased + mant_nonzero, 0, 254).astype(np.uint8)
    e[v == 0] = 0
    return e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = os.path.join(a.out, "formats")
    os.makedirs(out, exist_ok=True)

    def save(name, arr):
        np.ascontiguousarray(arr).tofile(os.path.join(out, name))

    # every BF16 bit pattern, as FP32
    allbf = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).astype(F32)
    save("bf16_e4m3.u8", e4m3_encode(allbf))
    save("bf16_e2m1.u8", e2m1_encode(allbf))

    # decodes
    save("e4m3_decode.f32", np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(F32))
    save("e2m1_decode.f32", np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(F32))
    e8 = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(F32)
    save("e8m0_decode.f32", e8)

    # RCEIL: power-of-two boundaries ±1 ulp, then 1M random positive finite values
    k = np.arange(-149, 128)
    p2 = np.ldexp(F32(1), k).astype(F32)
    bnd = np.concatenate([p2, np.nextafter(p2, F32(0)), np.nextafter(p2, F32(np.inf))])
    rng = np.random.default_rng(4)
    rnd = rng.integers(1, 0x7F800000, size=1_000_000, dtype=np.uint32).view(F32)
    extra = np.array([0, 448, 3.4028235e38, 1e-45], F32)
    rin = np.concatenate([bnd.astype(F32), rnd, extra]).astype(F32)
    rout = rceil(rin)
    # cross-check against the exact E8M0 decode of ml_dtypes: 2^(e-127) >= v, and
    # for e in [2, 254), 2^(e-128) < v (the ceiling), away from the clamps
    val = e8[rout].astype(np.float64)
    ok = rout == 254
    ok |= val >= rin.astype(np.float64)
    assert ok.all(), "rceil below v"
    mid = (rout >= 2) & (rout < 254)
    assert np.all(e8[rout[mid] - 1].astype(np.float64) < rin[mid].astype(np.float64)), "rceil not tight"
    save("rceil_in.f32", rin)
    save("rceil_out.u8", rout)

    # FP32 → BF16 RNE
    bb = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    ties = (np.arange(65536, dtype=np.uint32) << 16) | 0x8000  # exact ties on every pattern
    near = (np.arange(65536, dtype=np.uint32) << 16) | 0x7FFF
    bin_ = np.concatenate([ties, near, bb]).view(F32)
    with np.errstate(invalid="ignore"):
        bout = bin_.astype(ml_dtypes.bfloat16).view(np.uint16)
    save("bf16_in.f32", bin_)
    save("bf16_out.u16", bout)
    print(f"ci_formats: wrote {out} (65536 bf16 patterns, {rin.size} rceil values, {bin_.size} bf16 values)")


if __name__ == "__main__":
    main()

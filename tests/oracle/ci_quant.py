#!/usr/bin/env python3
"""ci_quant.py — a numpy + ml_dtypes reference of every quantizer, written from
docs/FORMATS.md (not from the C code), and the fixtures the C tests compare
against byte for byte (tests/test_quant.c).

For each case it writes OUT/quant/<case>/:
  meta.txt              "rows K n_nonfinite first_index amax_ext" (amax_ext: the
                        externally supplied NVFP4 amax of the nvx variant, as %a)
  x.bf16                the input, BF16 bit patterns [rows][K]; f32_* cases hold
  x.f32                 instead an FP32 input whose values BF16 cannot hold (the
                        FP32-input quantizers of convert; the rules see x itself)
  <v>.q, <v>.s          data bytes and scales of each variant v:
    fp8w  fp8wu         fp8-block 128×128 (FP32 scales); ...u = ue8m0 scales
    fp8a  fp8au         fp8-block 1×128
    mx                  MXFP8 1×32 (E8M0 scales)
    nv  nv2d  nvsr  nvx NVFP4 1×16, 16×16, stochastic rounding, external amax;
                        <v>.sdec = S_dec (FP32)
  <v>.deq               dequantized FP32 (small cases only)
Big cases write only the main variants to keep build/fixtures small.

Rules implemented here (FORMATS.md): scale = dequant multiplier; fp8-block
scale = amax/448 (FP32, correctly rounded), amax = 0 → 1, ue8m0 → 2^ceil(log2);
element = E4M3_sat(x / scale). MXFP8: e = RCEIL(amax/448), element =
E4M3_sat(x · 2^(127-e)). NVFP4: S_enc = 2688/amax (amax = 0 → 1, capped at
FLT_MAX), S_dec = 1/S_enc, sb = E4M3_sat(amax_b · (S_enc · (1/6))), enc =
1/(sb · S_dec) (capped at FLT_MAX; sb = 0 → elements 0), element = E2M1_sat(x · enc).
A block holding Inf/NaN is reported and poisoned: data 0, scale NaN.
"""
import argparse
import os

import ml_dtypes
import numpy as np

F32 = np.float32
U32 = np.uint32
FLT_MAX = F32(np.finfo(F32).max)
NAN_BITS = 0x7FC00000
SR_SEED = 0x0123456789ABCDEF
SR_OFFSET = 42


def e4m3(v):
    """E4M3 codes, RNE + satfinite (clip first: ml_dtypes does not saturate)."""
    with np.errstate(invalid="ignore"):
        return np.clip(v, F32(-448), F32(448)).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def e4m3_val(c):
    return np.asarray(c, np.uint8).view(ml_dtypes.float8_e4m3fn).astype(F32)


def e2m1(v):
    """E2M1 codes (0..15), RNE + satfinite."""
    with np.errstate(invalid="ignore"):
        return np.clip(v, F32(-6), F32(6)).astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F


E2M1_MAG = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], F32)


def philox_u32(seed, idx, offset):
    """Philox4x32-10, word 0, counter (idx lo, idx hi, offset lo, hi), key = seed."""
    idx = idx.astype(np.uint64)
    c0 = (idx & 0xFFFFFFFF).astype(np.uint64)
    c1 = (idx >> np.uint64(32)).astype(np.uint64)
    c2 = np.full_like(c0, offset & 0xFFFFFFFF)
    c3 = np.full_like(c0, offset >> 32)
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    m = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0)
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1)
        c1, c3, c0, c2 = p1 & m, p0 & m, n0, n2
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0.astype(U32)


def e2m1_sr(y, r):
    """E2M1 with stochastic rounding: up when (r >> 8)·2^-24 < (|y|-lo)/(hi-lo)."""
    a = np.abs(y)
    sign = (np.signbit(y).astype(np.uint8)) << 3
    lo = np.searchsorted(E2M1_MAG, a, side="right") - 1  # largest magnitude <= a
    lo = np.clip(lo, 0, 7)
    hi = np.clip(lo + 1, 0, 7)
    vlo, vhi = E2M1_MAG[lo], E2M1_MAG[hi]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = ((a - vlo) / np.where(hi > lo, vhi - vlo, F32(1))).astype(F32)
    t = (r >> U32(8)).astype(F32) * F32(2.0**-24)
    code = np.where((lo < 7) & (t < p), lo + 1, lo)
    code = np.where(a >= F32(6), 7, code)
    return (sign | code.astype(np.uint8)).astype(np.uint8)


def pow2_ceil(v):
    """Smallest power of two >= v (> 0), FP32 (subnormal powers included)."""
    m, ex = np.frexp(v.astype(np.float64))
    k = np.where(m == 0.5, ex - 1, ex)
    return np.ldexp(np.float64(1), k).astype(F32)


def rceil(v):
    """E8M0 RCEIL (see ci_formats.py)."""
    m, ex = np.frexp(v.astype(np.float64))
    normal = v >= F32(2.0**-126)
    e = np.where(normal, ex - 1 + 127, 0) + np.where(normal, m != 0.5, v != 0)
    e = np.clip(e, 0, 254).astype(np.uint8)
    e[v == 0] = 0
    return e


def blocks(x, br, bc):
    """Pad x [R,K] with zeros to whole br×bc blocks → [nb, kb, br·bc] view + finite mask."""
    R, K = x.shape
    nb, kb = -(-R // br), -(-K // bc)
    xp = np.zeros((nb * br, kb * bc), F32)
    xp[:R, :K] = x
    xb = xp.reshape(nb, br, kb, bc).transpose(0, 2, 1, 3).reshape(nb, kb, br * bc)
    return xb, np.isfinite(xb)


def unblock(qb, R, K, br, bc):
    nb, kb = qb.shape[:2]
    return qb.reshape(nb, kb, br, bc).transpose(0, 2, 1, 3).reshape(nb * br, kb * bc)[:R, :K]


def amax_of(xb, fin):
    return np.where(fin, np.abs(xb), F32(0)).max(axis=2)


def fp8_block(x, br, ue8m0):
    xb, fin = blocks(x, br, 128)
    amax = amax_of(xb, fin)
    bad = ~fin.all(axis=2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = (amax / F32(448)).astype(F32)
        # amax/448 underflows to 0 in FP32 only for FP32 inputs (amax < ~3.1e-43): the
        # smallest FP32 subnormal, 2^-149, is then the scale, with FP32 scales as with
        # ue8m0 (a scale of 0 would make the block's elements 0/0 or x/0)
        s = np.where((amax > 0) & (s == 0), F32(2.0**-149), s).astype(F32)
        if ue8m0:
            s = pow2_ceil(np.where(amax == 0, F32(1), s))
        s = np.where(amax == 0, F32(1), s).astype(F32)
        q = e4m3((xb / s[..., None]).astype(F32))
    q[bad] = 0
    s = s.copy()
    s.view(U32)[bad] = NAN_BITS
    return unblock(q, *x.shape, br, 128), s


def mxfp8(x):
    xb, fin = blocks(x, 1, 32)
    amax = amax_of(xb, fin)
    bad = ~fin.all(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = rceil((amax / F32(448)).astype(F32))
        mult = np.ldexp(F32(1), 127 - e.astype(np.int32)).astype(F32)
        q = e4m3((xb * mult[..., None]).astype(F32))
    q[bad] = 0
    e[bad] = 0xFF
    return unblock(q, *x.shape, 1, 32), e


def nvfp4(x, amax_t, br=1, sr=False):
    R, K = x.shape
    with np.errstate(divide="ignore", over="ignore"):
        s_enc = F32(1) if amax_t == 0 else min(F32(F32(2688) / F32(amax_t)), FLT_MAX)
    s_enc = F32(s_enc)
    s_dec = F32(F32(1) / s_enc)
    xb, fin = blocks(x, br, 16)
    amax = amax_of(xb, fin)
    bad = ~fin.all(axis=2)
    sb = e4m3((amax * (s_enc * (F32(1) / F32(6)))).astype(F32))
    sbv = e4m3_val(sb)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        enc = np.where(sbv == 0, F32(0), np.minimum(F32(1) / (sbv * s_dec), FLT_MAX)).astype(F32)
        y = (xb * enc[..., None]).astype(F32)
    if sr:
        nb, kb = xb.shape[:2]
        rr = np.arange(nb * br).reshape(nb, br)[:, None, :, None]
        cc = np.arange(kb * 16).reshape(kb, 16)[None, :, None, :]
        idx = (rr * K + cc).reshape(nb, kb, br * 16)
        q = e2m1_sr(y, philox_u32(SR_SEED, idx, SR_OFFSET))
    else:
        q = e2m1(y)
    q = np.where(sbv[..., None] == 0, 0, q).astype(np.uint8)
    q[bad] = 0
    sb = sb.copy()
    sb[bad] = 0x7F
    q = unblock(q, R, K, br, 16)
    if K % 2:
        q = np.concatenate([q, np.zeros((R, 1), np.uint8)], axis=1)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    scales = np.repeat(sb, br, axis=0)[:R] if br > 1 else sb
    return packed, scales, s_dec


def tensor_amax(x):
    f = np.isfinite(x)
    return F32(np.abs(np.where(f, x, F32(0))).max()) if x.size else F32(0)


def deq_fp8(q, s, br):
    R, K = q.shape
    sf = np.repeat(np.repeat(s, br, axis=0), 128, axis=1)[:R, :K]
    with np.errstate(over="ignore", invalid="ignore"):
        return (e4m3_val(q) * sf).astype(F32)  # may overflow to Inf near FLT_MAX, as in C


def deq_mx(q, e):
    R, K = q.shape
    sf = np.repeat(e.view(ml_dtypes.float8_e8m0fnu).astype(F32), 32, axis=1)[:, :K]
    with np.errstate(over="ignore", invalid="ignore"):
        return (e4m3_val(q) * sf).astype(F32)  # 256·2^120 → Inf, as in C


def deq_nv(packed, sb, s_dec, K):
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[0], -1)[:, :K]
    v = codes.view(ml_dtypes.float4_e2m1fn).astype(F32)
    sf = np.repeat(e4m3_val(sb), 16, axis=1)[:, :K]
    return ((v * sf).astype(F32) * s_dec).astype(F32)


def scaled_normal(rng, R, K, dirty):
    """Normal FP32 values over an exponent range per row and per 16-column group
    (the first draws of make_input and make_input_f32, in this order)."""
    x = rng.standard_normal((R, K), dtype=F32)
    wr, wg = (24, 6) if dirty else (6, 4)
    x *= np.ldexp(F32(1), rng.integers(-wr, wr + 1, size=(R, 1))).astype(F32)
    g = np.ldexp(F32(1), rng.integers(-wg, wg + 1, size=(R, -(-K // 16)))).astype(F32)
    x *= np.repeat(g, 16, axis=1)[:, :K]
    return x


def make_input(R, K, seed, dirty):
    """Normal values over an exponent range per row and per 16-column group,
    plus (when there is room) a zero row, a 128×128 zero block, a row of BF16
    subnormals and values at/above E4M3's 448. `dirty` widens the range and
    adds a row of random finite BF16 bit patterns, the BF16 maximum, and +Inf,
    -Inf, NaN (clean cases keep NVFP4's tensor amax moderate, so that most
    NVFP4 block scales are non-zero)."""
    rng = np.random.default_rng(seed)
    x = scaled_normal(rng, R, K, dirty)
    h = x.astype(ml_dtypes.bfloat16).view(np.uint16).copy()
    if R >= 3:
        h[R // 3, :] = 0
    if R >= 256 and K >= 256:
        h[128:256, 128:256] = 0
    if R >= 2:
        sub = rng.integers(1, 0x80, size=K, dtype=np.uint16)
        h[R // 2, :] = sub | (rng.integers(0, 2, size=K, dtype=np.uint16) << 15)
    if R >= 5 and dirty:
        rb = rng.integers(0, 0x10000, size=K, dtype=np.uint32).astype(np.uint16)
        rb[(rb & 0x7F80) == 0x7F80] &= 0xBFFF  # keep finite
        h[(4 * R) // 5, :] = rb
    if R >= 4 and K >= 40:
        r = (2 * R) // 3
        if dirty:
            h[r, 0] = 0x7F7F  # BF16 max 3.39e38
            h[r, 1] = 0xFF7F
        h[r, 32:40] = np.array([448, -448, 464, 480, 449, 1e4, -0.0, 0.0], F32).astype(
            ml_dtypes.bfloat16).view(np.uint16)
    if dirty:
        for (r, c, v) in ((R - 1, K - 1, 0x7F80), (R // 2, K // 2, 0xFFC1), ((3 * R) // 4, 3, 0xFF80)):
            h[min(r, R - 1), min(c, K - 1)] = v
    return h


def make_input_f32(R, K, seed, dirty):
    """make_input's features in FP32 values that BF16 cannot hold: full 24-bit
    significands, a row of FP32 subnormals, values just around E4M3's 448, and
    (dirty) random finite FP32 bit patterns, ±FLT_MAX, +Inf, -Inf, NaN."""
    rng = np.random.default_rng(seed)
    x = scaled_normal(rng, R, K, dirty)
    if R >= 3:
        x[R // 3, :] = 0
    if R >= 256 and K >= 256:
        x[128:256, 128:256] = 0
    if R >= 2:
        sub = rng.integers(1, 0x800000, size=K, dtype=np.uint32)
        x[R // 2, :] = (sub | (rng.integers(0, 2, size=K, dtype=np.uint32) << 31)).view(F32)
    if R >= 5 and dirty:
        rb = rng.integers(0, 2**32, size=K, dtype=np.uint64).astype(np.uint32)
        rb[(rb & 0x7F800000) == 0x7F800000] &= 0xBFFFFFFF  # keep finite
        x[(4 * R) // 5, :] = rb.view(F32)
    if R >= 4 and K >= 40:
        r = (2 * R) // 3
        if dirty:
            x[r, 0] = FLT_MAX
            x[r, 1] = -FLT_MAX
        x[r, 32:40] = np.array([447.99997, -448.00003, 463.99997, 464.00003, 1e4 + 0.001, 1.0000001,
                                -0.0, 0.0], F32)
    if dirty:
        for (r, c, v) in ((R - 1, K - 1, np.inf), (R // 2, K // 2, np.nan), ((3 * R) // 4, 3, -np.inf)):
            x[min(r, R - 1), min(c, K - 1)] = v
    return x


def write_case(out, name, h, full):
    """h: BF16 bit patterns (uint16), or an FP32 array for an f32_* case."""
    R, K = h.shape
    d = os.path.join(out, "quant", name)
    os.makedirs(d, exist_ok=True)
    x = h.astype(F32) if h.dtype == F32 else h.view(ml_dtypes.bfloat16).astype(F32)
    nf = ~np.isfinite(x)
    first = int(np.flatnonzero(nf.ravel())[0]) if nf.any() else -1
    amax = tensor_amax(x)
    with np.errstate(over="ignore"):
        amax_ext = min(F32(amax * F32(1.5)), FLT_MAX) if amax > 0 else F32(1.0)
    small = R * K <= 200_000

    def save(fn, a):
        np.ascontiguousarray(a).tofile(os.path.join(d, fn))

    save("x.f32" if h.dtype == F32 else "x.bf16", h)
    with open(os.path.join(d, "meta.txt"), "w") as f:
        f.write(f"{R} {K} {int(nf.sum())} {first} {float(amax_ext).hex()}\n")
    variants = [("fp8w", lambda: fp8_block(x, 128, False)), ("fp8a", lambda: fp8_block(x, 1, False)),
                ("mx", lambda: mxfp8(x)), ("nv", lambda: nvfp4(x, amax))]
    if full:
        variants += [("fp8wu", lambda: fp8_block(x, 128, True)), ("fp8au", lambda: fp8_block(x, 1, True)),
                     ("nv2d", lambda: nvfp4(x, amax, br=16)), ("nvsr", lambda: nvfp4(x, amax, sr=True)),
                     ("nvx", lambda: nvfp4(x, amax_ext))]
    for v, fn in variants:
        res = fn()
        save(v + ".q", res[0])
        save(v + ".s", res[1])
        if v.startswith("nv"):
            save(v + ".sdec", np.array([res[2]], F32))
        if small and v in ("fp8w", "fp8a", "mx", "nv"):
            if v == "fp8w":
                deq = deq_fp8(res[0], res[1], 128)
            elif v == "fp8a":
                deq = deq_fp8(res[0], res[1], 1)
            elif v == "mx":
                deq = deq_mx(res[0], res[1])
            else:
                deq = deq_nv(res[0], res[1], res[2], K)
            save(v + ".deq", deq)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cases = []
    # 1×1 corner cases: value, zero, subnormal, BF16 max, +Inf, NaN
    for nm, bits in (("1x1_val", 0x3FC0), ("1x1_zero", 0x0000), ("1x1_sub", 0x0001),
                     ("1x1_max", 0x7F7F), ("1x1_inf", 0x7F80), ("1x1_nan", 0x7FC0)):
        cases.append((nm, np.array([[bits]], np.uint16), True))
    for (R, K, seed) in ((7, 33, 1), (127, 129, 2), (300, 4096, 3)):
        cases.append((f"{R}x{K}", make_input(R, K, seed, False), True))
        cases.append((f"{R}x{K}_nf", make_input(R, K, seed + 100, True), True))
    cases.append(("4096x4096_nf", make_input(4096, 4096, 5, True), False))
    # FP32 inputs (convert of F32/F16 checkpoints): value, subnormal, FLT_MAX, NaN
    for nm, v in (("f32_1x1_val", 1.2345678), ("f32_1x1_sub", 1e-45), ("f32_1x1_max", np.finfo(F32).max),
                  ("f32_1x1_nan", np.nan)):
        cases.append((nm, np.array([[v]], F32), True))
    for (R, K, seed) in ((7, 33, 11), (127, 129, 12), (300, 4096, 13)):
        cases.append((f"f32_{R}x{K}", make_input_f32(R, K, seed, False), True))
        cases.append((f"f32_{R}x{K}_nf", make_input_f32(R, K, seed + 100, True), True))
    names = []
    for nm, h, full in cases:
        write_case(a.out, nm, h, full)
        names.append(nm)
    with open(os.path.join(a.out, "quant", "cases.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"ci_quant: wrote {len(names)} cases into {os.path.join(a.out, 'quant')}")


if __name__ == "__main__":
    main()

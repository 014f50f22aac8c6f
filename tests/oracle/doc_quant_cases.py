#!/usr/bin/env python3
"""doc_quant_cases.py — expected bytes for tests/test_quant_doc.c, computed by
quantizers written from the words of FORMATS.md alone (numpy + ml_dtypes), not
from kernels/ nor from ci_quant.py (an audit's second reading of the contract).

Prints tests/test_quant_doc_cases.h (commit the output):
  python3 tests/oracle/doc_quant_cases.py > tests/test_quant_doc_cases.h

The inputs are adversarial BF16 tensors: E4M3 and E2M1 rounding ties after
scaling, amax exactly 448·2^k and the next BF16 above it, the largest BF16
(0x7F7F) as a lone outlier, BF16 subnormals (MXFP8 scale quotient in FP32's
subnormal range), all-zero blocks with negative zeros, partial blocks (K or N =
1, 129, 200, 17). Only finite inputs: non-finite handling is in test_quant.c.

Reading of the doc used here: every operation the doc puts in FP32 is one
IEEE-754 binary32 operation (numpy float32, correctly rounded); E4M3/E2M1
encoding is RNE after clipping to ±max (ml_dtypes does not saturate); ue8m0 is
2^ceil(log2(v)) of the FP32 quotient v, computed exactly with frexp; the MXFP8
element is x·2^(127-e) done exactly (float64) and then encoded.
"""
import sys

import ml_dtypes as md
import numpy as np

F32 = np.float32
E4M3 = md.float8_e4m3fn
E2M1 = md.float4_e2m1fn


def e4m3_sat(x):
    return np.clip(np.asarray(x, F32), F32(-448), F32(448)).astype(E4M3)


def e2m1_sat(x):
    return np.clip(np.asarray(x, F32), F32(-6), F32(6)).astype(E2M1)


def u8(a):
    return np.asarray(a).view(np.uint8)


def amax_of(b):
    return F32(np.max(np.abs(b))) if b.size else F32(0)


def ceil_log2(v):
    m, e = np.frexp(np.float64(v))  # v = m·2^e, m in [0.5, 1)
    return int(e - 1) if m == 0.5 else int(e)


def fp8_block(x, bn, bk, ue8m0):
    """FORMATS.md fp8-block: bn×bk blocks (partial edges), scale = amax/448
    (amax = 0 → 1; ue8m0 → 2^ceil(log2)), element = E4M3_sat(x / scale)."""
    N, K = x.shape
    nb, kb = -(-N // bn), -(-K // bk)
    q = np.zeros((N, K), np.uint8)
    s = np.zeros((nb, kb), F32)
    for i in range(nb):
        for j in range(kb):
            blk = x[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk]
            a = amax_of(blk)
            sc = F32(1) if a == 0 else F32(a / F32(448))
            if a != 0 and ue8m0:
                sc = F32(np.ldexp(1.0, ceil_log2(sc)))
            s[i, j] = sc
            q[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk] = u8(e4m3_sat(blk / sc))
    return q, s


def mxfp8(x):
    """FORMATS.md MXFP8: 1×32, e by RCEIL of v = amax/448 (FP32), clamp [0, 254],
    amax = 0 → 0; element = E4M3_sat(x·2^(127-e))."""
    N, K = x.shape
    q = np.zeros((N, K), np.uint8)
    s = np.zeros((N, -(-K // 32)), np.uint8)
    for r in range(N):
        for j in range(s.shape[1]):
            blk = x[r, j * 32:(j + 1) * 32]
            a = amax_of(blk)
            e = 0
            if a != 0:
                bits = int(np.array(F32(a / F32(448))).view(np.uint32))
                e = min(max(((bits >> 23) & 0xFF) + (1 if bits & 0x7FFFFF else 0), 0), 254)
            s[r, j] = e
            y = np.ldexp(blk.astype(np.float64), 127 - e)
            q[r, j * 32:(j + 1) * 32] = u8(np.clip(y, -448, 448).astype(E4M3))
    return q, s


def nvfp4(x):
    """FORMATS.md NVFP4: S_enc = 448·6/amax (amax = 0 → 1), S_dec = 1/S_enc,
    sb = E4M3_sat(amax_b·(S_enc·(1/6))), enc = 1/(sb·S_dec) (sb = 0 → 0),
    element = E2M1_sat(x·enc), element 2i in the low nibble."""
    N, K = x.shape
    A = amax_of(x)
    s_enc = F32(1) if A == 0 else F32(F32(2688) / A)
    s_dec = F32(F32(1) / s_enc)
    kb = -(-K // 16)
    codes = np.zeros((N, K), np.uint8)
    sb = np.zeros((N, kb), np.uint8)
    for r in range(N):
        for j in range(kb):
            blk = x[r, j * 16:(j + 1) * 16]
            sq = e4m3_sat(F32(amax_of(blk) * F32(s_enc * (F32(1) / F32(6)))))
            sb[r, j] = u8(sq)
            sv = F32(sq.astype(F32))
            if sv != 0:
                enc = F32(F32(1) / F32(sv * s_dec))
                codes[r, j * 16:(j + 1) * 16] = u8(e2m1_sat((blk * enc).astype(F32))) & 0xF
    packed = np.zeros((N, -(-K // 2)), np.uint8)
    packed[:, :] = codes[:, 0::2]
    packed[:, :K // 2] |= codes[:, 1::2] << 4
    return packed, sb, s_dec


def bf16(v):
    return np.asarray(v, F32).astype(md.bfloat16)


E4_VALS = np.arange(0x7F, dtype=np.uint8).view(E4M3).astype(np.float64)  # 0 .. 448
E4_MIDS = (E4_VALS[1:] + E4_VALS[:-1]) / 2  # every RNE tie of E4M3 (all exact in BF16)
E2_MIDS = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
BF16_MAX = float(np.array(0x7F7F, np.uint16).view(md.bfloat16))


def cases():
    """name → (BF16 tensor as FP32 [N, K], which quantizers)."""
    out = {}
    # fp8-block act, 3×129: ties with scale 1 / a lone second tile / zeros / outlier
    x = np.zeros((3, 129))
    x[0, 0] = 448
    x[0, 1:120] = E4_MIDS[::-1][:119] * np.where(np.arange(119) % 2, -1, 1)
    x[0, 120:128] = [3 * 2.0**-10, 2.0**-10, -0.0, 2.0**-11, 0.5 + 2.0**-5, -7 * 2.0**-10, 464 / 2, 15 * 2.0**-10]
    x[0, 128] = -3.0
    x[1, :] = -0.0
    x[1, ::3] = 0.0
    x[2, :128] = np.sin(np.arange(128) * 0.7) * 1000
    x[2, 5] = BF16_MAX
    x[2, 128] = 5 * 2.0**-133  # a BF16 subnormal alone in its tile
    out["act_3x129"] = (bf16(x).astype(F32), "act")
    # fp8-block weight, 129×1: two row blocks, the second a single element
    x = ((np.arange(129) - 64) * 0.37).reshape(129, 1)
    x[7, 0] = -0.0
    x[128, 0] = 1e-3
    out["w_129x1"] = (bf16(x).astype(F32), "w")
    # fp8-block weight, 1×200: a full and a 72-wide column block; amax 448·2^-3 exactly in the first
    x = (np.cos(np.arange(200) * 0.3) * 40).reshape(1, 200)
    x[0, 10] = -56.0
    x[0, 150] = np.nextafter(F32(56), F32(100))  # not BF16: rounds to 56.25
    out["w_1x200"] = (bf16(x).astype(F32), "w")
    # mxfp8 2×96: amax = 448·4 (v exact power of 2) with ties; amax the next BF16 (e + 1);
    # FP32-subnormal quotient (e = 1); all-zero block (e = 0); the largest BF16 as an outlier
    x = np.zeros((2, 96))
    x[0, 0] = 1792
    x[0, 1:32] = E4_MIDS[::-1][:31] * 4 * np.where(np.arange(31) % 2, -1, 1)
    x[0, 32] = 1800
    x[0, 33:64] = np.linspace(-1800, 1700, 31)
    x[0, 64:96] = np.arange(-16, 16) * 2.0**-133
    x[0, 70] = -0.0
    x[1, 0:32] = -0.0
    x[1, 32:64] = np.sin(np.arange(32)) * 3
    x[1, 40] = BF16_MAX
    x[1, 64:96] = np.arange(32) * 0.125 - 2
    out["mx_2x96"] = (bf16(x).astype(F32), "mx")
    # nvfp4 2×48: tensor amax 2688 (S_enc = S_dec = 1); E2M1 ties with sb = 1.0; a zero
    # block with -0; sb an E4M3 subnormal; -0 elements in a live block
    x = np.zeros((2, 48))
    x[0, 0] = 2688
    x[0, 1:16] = 448 * np.array([0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -0.25, 6])
    x[0, 16:32] = np.concatenate([[6], E2_MIDS, -E2_MIDS, [-0.0]])
    x[0, 32:48] = -0.0
    x[0, 40] = 0.0
    x[1, 0:16] = np.linspace(-0.3, 0.29, 16)
    x[1, 3] = -0.0
    x[1, 16:32] = np.linspace(0.01, -0.008, 16)
    x[1, 32:48] = np.concatenate([[-6, -0.0], E2_MIDS * 0.999, E2_MIDS * 1.001])
    out["nv_2x48"] = (bf16(x).astype(F32), "nv")
    # nvfp4 1×17 (odd K: a 1-element block, the padding nibble): amax 100 → S_enc = 26.88 rounded
    x = (np.sin(np.arange(17) * 1.3) * 60).reshape(1, 17)
    x[0, 9] = -100
    x[0, 16] = 0.7
    out["nv_1x17"] = (bf16(x).astype(F32), "nv")
    # nvfp4 2×16, rounding order: amax 1.0234375 where S_dec = 1/S_enc differs from amax/2688,
    # and a block amax where amax_b·(S_enc·(1/6)) and (amax_b·S_enc)/6 round to different sb
    x = np.zeros((2, 16))
    x[0] = np.linspace(-1, 1, 16)
    x[0, 5] = 1.0234375
    x[1] = np.linspace(-1.5e-5, 1.2e-5, 16)
    x[1, 9] = float(np.array(0x3783, np.uint16).view(md.bfloat16))  # 1.5616417e-05
    out["nv_2x16_order"] = (bf16(x).astype(F32), "nv")
    # nvfp4 1×32, element rounding order: amax 100, a block of amax 3.3125 where x·enc
    # (enc = 1/(sb·S_dec)) and x/(sb·S_dec) fall on different sides of an E2M1 tie
    x = np.zeros((1, 32))
    x[0, :16] = np.linspace(-100, 90, 16)
    x[0, 16:] = np.linspace(-3, 3, 16)
    x[0, 16:20] = [3.3125, 0.9765625, 1.953125, -1.953125]
    out["nv_1x32_enc"] = (bf16(x).astype(F32), "nv")
    # nvfp4 all (negative) zeros: S_enc = 1, every sb = 0, every element 0
    x = np.full((1, 32), -0.0)
    out["nv_1x32_zero"] = (bf16(x).astype(F32), "nv")
    return out


def carr(ctype, name, vals, per=16, fmt="0x%02x"):
    lines = [f"static const {ctype} {name}[{len(vals)}] = {{"]
    for i in range(0, len(vals), per):
        lines.append("    " + ", ".join(fmt % v for v in vals[i:i + per]) + ",")
    lines.append("};")
    return "\n".join(lines)


def main():
    print("/* test_quant_doc_cases.h — generated by tests/oracle/doc_quant_cases.py (numpy "
          f"{np.__version__}, ml_dtypes {md.__version__}):\n * inputs (BF16 bit patterns) and the "
          "bytes an independent reading of FORMATS.md gives. Do not edit. */")
    for name, (x, kind) in cases().items():
        N, K = x.shape
        print(f"\n/* {name}: {kind} [{N}][{K}] */")
        print(carr("uint16_t", f"{name}_x", bf16(x).reshape(-1).view(np.uint16), 8, "0x%04x"))
        if kind in ("act", "w"):
            bn = 1 if kind == "act" else 128
            for ue in (0, 1):
                q, s = fp8_block(x, bn, 128, ue)
                sfx = "_ue" if ue else ""
                print(carr("uint8_t", f"{name}_q{sfx}", q.reshape(-1)))
                print(carr("uint32_t", f"{name}_s{sfx}", s.reshape(-1).view(np.uint32), 4, "0x%08xu"))
        elif kind == "mx":
            q, s = mxfp8(x)
            print(carr("uint8_t", f"{name}_q", q.reshape(-1)))
            print(carr("uint8_t", f"{name}_s", s.reshape(-1)))
        else:
            q, s, sdec = nvfp4(x)
            print(carr("uint8_t", f"{name}_q", q.reshape(-1)))
            print(carr("uint8_t", f"{name}_s", s.reshape(-1)))
            print(f"static const uint32_t {name}_sdec = 0x{int(np.array(sdec).view(np.uint32)):08x}u;")


if __name__ == "__main__":
    sys.exit(main())

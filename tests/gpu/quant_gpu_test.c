/* quant_gpu_test.c — CUDA quantizers against the CPU reference, byte for
 * byte (data, scales, S_dec, non-finite statistics), on the GPU machine.
 *
 *   build/gpu/quant_gpu_test            prints one line per check, exit 1 on any FAIL
 *
 * Shapes: 1×1, 7×33, 127×129, 300×4096, 4096×4096, 129×4112, 3×16, 65×48,
 * 1000×1040 (fast path with partial blocks and partial warps) and 8192×8192; inputs hold zero rows, BF16 subnormals,
 * random BF16 bit patterns, the BF16 maximum and ±Inf/NaN. Every variant runs
 * twice: hardware E4M3 cvt and the software codec. First, the fast device
 * forms of the rules (E2M1 encoders, exact division) against formats.h; then
 * the multi-tensor weight quantizers (fp8-block, MXFP8) against the
 * single-tensor calls on a list of 14 tensors (check_multi); and the adversarial
 * inputs of test_quant_doc.c (tests/test_quant_doc_cases.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/quant.h"
#include "tests/test_quant_doc_cases.h" /* adversarial inputs of test_quant_doc.c */

#if RLRUN_CUDA
#include <cuda_runtime.h>

#include "tests/cuda_check.h" /* CU */

/* Counts of the whole run. */
static struct {
  int pass, fail;
} g;

/* xorshift64 for test inputs. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}

/* A BF16 test input [R][K]: normal values over a range of magnitudes, a zero
 * row, a row of subnormals, a row of random finite patterns, BF16 max, and
 * (when dirty) +Inf, NaN, -Inf. */
static uint16_t *make_input(int64_t R, int64_t K, uint64_t seed, int dirty) {
  uint16_t *h = rl_xmalloc((size_t)(R * K) * 2 + 2);
  uint64_t s = seed * 2654435761u + 1;
  for (int64_t r = 0; r < R; r++) {
    int re = (int)(rnd(&s) % 13) - 6;
    for (int64_t c = 0; c < K; c++) {
      int ge = (int)((r * 31 + c / 16) % 9) - 4;
      float u = (float)((double)(rnd(&s) >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
      h[r * K + c] = fmt_bf16_from_f32(ldexpf(u * 3.0f, re + ge));
    }
  }
  if (R >= 3) memset(h + (R / 3) * K, 0, (size_t)K * 2);
  if (R >= 2)
    for (int64_t c = 0; c < K; c++) h[(R / 2) * K + c] = (uint16_t)((rnd(&s) % 127 + 1) | ((rnd(&s) & 1) << 15));
  if (R >= 5 && dirty)
    for (int64_t c = 0; c < K; c++) {
      uint16_t b = (uint16_t)rnd(&s);
      if ((b & 0x7F80) == 0x7F80) b &= 0xBFFF;
      h[(4 * R / 5) * K + c] = b;
    }
  if (dirty) {
    h[R * K - 1] = 0x7F80;
    h[(R / 2) * K + K / 2] = 0xFFC1;
    h[((3 * R) / 4) * K + (K > 3 ? 3 : 0)] = 0xFF80;
    if (K >= 2) h[(2 * R / 3) * K + 1] = 0x7F7F;
  }
  return h;
}

/* Report one comparison of n bytes. */
static void compare(const char *what, const void *cpu, const void *gpu, size_t n) {
  const uint8_t *a = cpu, *b = gpu;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i] && !bad++) first = i;
  if (bad) {
    g.fail++;
    printf("FAIL %-44s %zu of %zu bytes differ, first at %zu (cpu 0x%02x gpu 0x%02x)\n", what, bad, n, first,
           a[first], b[first]);
  } else {
    g.pass++;
  }
}

/* Device copy of a host buffer. */
static void *dup_to_device(const void *h, size_t n) {
  void *d = NULL;
  CU(cudaMalloc(&d, n ? n : 1));
  if (n) CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
  return d;
}

/* Host copy of a device buffer. */
static void *dup_to_host(const void *d, size_t n) {
  void *h = rl_xmalloc(n ? n : 1);
  if (n) CU(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
  return h;
}

/* Which quantizer a check runs. */
enum { V_FP8W, V_FP8W_HOP, V_FP8A, V_FP8A_HOP, V_MX, V_NV, V_NVX, V_NV2D, V_NVSR, V_COUNT };
static const char *vname[V_COUNT] = {"fp8-block 128x128", "fp8-block 128x128 hopper", "fp8-block 1x128",
                                     "fp8-block 1x128 hopper", "mxfp8", "nvfp4", "nvfp4 ext-amax",
                                     "nvfp4 16x16", "nvfp4 SR"};

/* Run variant v (with ue8m0 where it applies) on CPU and GPU; compare. */
static void check_variant(const char *shape, const uint16_t *x, const uint16_t *dx, int64_t R, int64_t K, int v,
                          int ue, int hw) {
  int64_t n = R * K, kb128 = quant_cdiv(K, 128), nb = quant_cdiv(R, 128), ld = quant_roundup(R, 8);
  int nvf = v >= V_NV;
  size_t qbytes = nvf ? (size_t)(R * quant_cdiv(K, 2)) : (size_t)n;
  size_t sbytes = v == V_FP8W       ? (size_t)(nb * kb128 * 4)
                  : v == V_FP8W_HOP ? (size_t)(nb * quant_roundup(kb128, 4) * 4)
                  : v == V_FP8A     ? (size_t)(R * kb128 * 4)
                  : v == V_FP8A_HOP ? (size_t)(kb128 * ld * 4)
                  : v == V_MX       ? (size_t)(R * quant_cdiv(K, 32))
                                    : (size_t)(R * quant_cdiv(K, 16));
  quant_opts o = {.ue8m0 = ue, .nvfp4_2d = v == V_NV2D, .stochastic = v == V_NVSR, .sr_seed = 77, .sr_offset = 5};
  if (v == V_FP8W_HOP) o.scale_layout = QLAYOUT_HOPPER_WEIGHT;
  if (v == V_FP8A_HOP) o.scale_layout = QLAYOUT_HOPPER_ACT, o.scale_ld = ld;
  uint8_t *q = rl_xmalloc(qbytes + 1), *sc = rl_xcalloc(sbytes + 4, 1);
  uint8_t *dq, *dsc;
  CU(cudaMalloc((void **)&dq, qbytes + 1));
  CU(cudaMalloc((void **)&dsc, sbytes + 4));
  CU(cudaMemset(dsc, 0, sbytes + 4));
  if (v == V_FP8W_HOP || v == V_FP8A_HOP) { /* padding is the caller's: same on both sides */
    for (size_t i = 0; i < sbytes / 4; i++) ((float *)sc)[i] = 1.0f;
    CU(cudaMemcpy(dsc, sc, sbytes, cudaMemcpyHostToDevice));
  }
  quant_stats st = {0}, gst = {0}, *dst;
  float sdec = 0, *dsdec, amax_ext = 0, *damax;
  CU(cudaMalloc((void **)&dst, sizeof *dst));
  CU(cudaMalloc((void **)&dsdec, 4));
  CU(cudaMalloc((void **)&damax, 4));
  rl_err e;
  int rc = 0, grc = 0;
  quant_cuda_set_hw_cvt(hw);
  if (v == V_NVX) {
    amax_ext = quant_amax_bf16_cpu(x, n, NULL) * 1.25f;
    if (!qf_isfinite(amax_ext)) amax_ext = FMT_FLT_MAX;
    CU(cudaMemcpy(damax, &amax_ext, 4, cudaMemcpyHostToDevice));
  }
  switch (v) {
    case V_FP8W: case V_FP8W_HOP:
      rc = quant_fp8_block_weight_cpu(x, R, K, q, (float *)sc, &o, &st);
      grc = quant_fp8_block_weight_cuda(dx, R, K, dq, (float *)dsc, &o, dst, NULL, &e);
      break;
    case V_FP8A: case V_FP8A_HOP:
      rc = quant_fp8_block_act_cpu(x, R, K, q, (float *)sc, &o, &st);
      grc = quant_fp8_block_act_cuda(dx, R, K, dq, (float *)dsc, &o, dst, NULL, &e);
      break;
    case V_MX:
      rc = quant_mxfp8_cpu(x, R, K, q, sc, &o, &st);
      grc = quant_mxfp8_cuda(dx, R, K, dq, dsc, &o, dst, NULL, &e);
      break;
    case V_NVX:
      rc = quant_nvfp4_amax_cpu(x, R, K, amax_ext, q, sc, &sdec, &o, &st);
      grc = quant_nvfp4_amax_cuda(dx, R, K, damax, dq, dsc, dsdec, &o, dst, NULL, &e);
      break;
    default:
      rc = quant_nvfp4_cpu(x, R, K, q, sc, &sdec, &o, &st);
      grc = quant_nvfp4_cuda(dx, R, K, dq, dsc, dsdec, &o, dst, NULL, &e);
  }
  char what[160];
  snprintf(what, sizeof what, "%s %s%s %s", shape, vname[v], ue ? " ue8m0" : "", hw ? "hw" : "sw");
  if (grc != 0 && grc != QUANT_NONFINITE) {
    g.fail++;
    printf("FAIL %-44s cuda status %d: %s\n", what, grc, e.msg);
  } else {
    CU(cudaDeviceSynchronize());
    if (quant_stats_fetch_cuda(dst, &gst, NULL, &e) != 0) printf("stats: %s\n", e.msg);
    uint8_t *gq = dup_to_host(dq, qbytes), *gsc = dup_to_host(dsc, sbytes);
    char w2[200];
    snprintf(w2, sizeof w2, "%s data", what), compare(w2, q, gq, qbytes);
    snprintf(w2, sizeof w2, "%s scales", what), compare(w2, sc, gsc, sbytes);
    if (nvf) {
      float gs;
      CU(cudaMemcpy(&gs, dsdec, 4, cudaMemcpyDeviceToHost));
      snprintf(w2, sizeof w2, "%s S_dec", what), compare(w2, &sdec, &gs, 4);
    }
    int stats_ok = gst.n_nonfinite == st.n_nonfinite && gst.first_index == st.first_index &&
                   (rc == QUANT_NONFINITE) == (st.n_nonfinite > 0);
    if (!stats_ok) {
      g.fail++;
      printf("FAIL %-44s stats cpu (%lld, %lld) gpu (%lld, %lld)\n", what, (long long)st.n_nonfinite,
             (long long)st.first_index, (long long)gst.n_nonfinite, (long long)gst.first_index);
    } else g.pass++;
    free(gq), free(gsc);
    /* dequantizers: GPU from the GPU bytes = CPU from the CPU bytes */
    if (hw && !ue && (v == V_FP8W || v == V_FP8A || v == V_MX || v == V_NV) && n <= (1 << 24)) {
      float *cf = rl_xmalloc((size_t)n * 4 + 4), *df;
      CU(cudaMalloc((void **)&df, (size_t)n * 4 + 4));
      if (v == V_FP8W) dequant_fp8_block_weight_cpu(q, (float *)sc, R, K, cf, NULL),
                       dequant_fp8_block_weight_cuda(dq, (float *)dsc, R, K, df, NULL, NULL, &e);
      if (v == V_FP8A) dequant_fp8_block_act_cpu(q, (float *)sc, R, K, cf, NULL),
                       dequant_fp8_block_act_cuda(dq, (float *)dsc, R, K, df, NULL, NULL, &e);
      if (v == V_MX) dequant_mxfp8_cpu(q, sc, R, K, cf, NULL), dequant_mxfp8_cuda(dq, dsc, R, K, df, NULL, NULL, &e);
      if (v == V_NV) dequant_nvfp4_cpu(q, sc, sdec, R, K, cf, NULL),
                     dequant_nvfp4_cuda(dq, dsc, dsdec, R, K, df, NULL, NULL, &e);
      float *gf = dup_to_host(df, (size_t)n * 4);
      snprintf(w2, sizeof w2, "%s dequant", what), compare(w2, cf, gf, (size_t)n * 4);
      free(cf), free(gf);
      CU(cudaFree(df));
    }
  }
  free(q), free(sc);
  CU(cudaFree(dq));
  CU(cudaFree(dsc));
  CU(cudaFree(dst));
  CU(cudaFree(dsdec));
  CU(cudaFree(damax));
}

/* Layout kernels against the CPU conversions. */
static void check_layouts(void) {
  int64_t M = 300, kb = 33, ld = 304, rows = 300, cols = 257;
  float *a = rl_xmalloc((size_t)(M * kb) * 4), *c1 = rl_xmalloc((size_t)(kb * ld) * 4);
  for (int64_t i = 0; i < M * kb; i++) a[i] = (float)i * 0.5f;
  quant_layout_fp8_act_scales_to_cublaslt(a, M, kb, ld, c1);
  float *da = dup_to_device(a, (size_t)(M * kb) * 4), *dc;
  CU(cudaMalloc((void **)&dc, (size_t)(kb * ld) * 4));
  rl_err e;
  quant_layout_fp8_act_scales_to_cublaslt_cuda(da, M, kb, ld, dc, NULL, &e);
  float *g1 = dup_to_host(dc, (size_t)(kb * ld) * 4);
  compare("layout act → cublaslt", c1, g1, (size_t)(kb * ld) * 4);
  int64_t nb = 3, kp = quant_roundup(kb, 4);
  float *w = rl_xmalloc((size_t)(nb * kp) * 4);
  quant_layout_fp8_weight_scales_to_cublaslt(a, nb, kb, w);
  quant_layout_fp8_weight_scales_to_cublaslt_cuda(da, nb, kb, dc, NULL, &e);
  float *g2 = dup_to_host(dc, (size_t)(nb * kp) * 4);
  compare("layout weight → cublaslt", w, g2, (size_t)(nb * kp) * 4);
  uint8_t *b = rl_xmalloc((size_t)(rows * cols)), *sw = rl_xmalloc(quant_layout_swizzle_bytes(rows, cols)), *db, *ds;
  for (int64_t i = 0; i < rows * cols; i++) b[i] = (uint8_t)(i * 13 + 7);
  quant_layout_scales_to_swizzled(b, rows, cols, sw);
  db = dup_to_device(b, (size_t)(rows * cols));
  CU(cudaMalloc((void **)&ds, quant_layout_swizzle_bytes(rows, cols)));
  quant_layout_scales_to_swizzled_cuda(db, rows, cols, ds, NULL, &e);
  uint8_t *g3 = dup_to_host(ds, quant_layout_swizzle_bytes(rows, cols));
  compare("layout 128x4 swizzle", sw, g3, quant_layout_swizzle_bytes(rows, cols));
  free(a), free(c1), free(g1), free(w), free(g2), free(b), free(sw), free(g3);
  CU(cudaFree(da));
  CU(cudaFree(dc));
  CU(cudaFree(db));
  CU(cudaFree(ds));
}

/* The multi-tensor weight quantizers against the single-tensor calls, byte
 * for byte (data, scales, stats), and their stats against the CPU's, on a list
 * of varied shapes: Qwen3 linears, rows and K not multiples of 128, K % 16 != 0
 * and a misaligned source (the per-tensor fallback), an empty tensor, two
 * tensors holding Inf/NaN (the stats must name them and only them). Once with
 * a workspace for every tensor, once with one for 3 per launch (batches). */
static void check_multi(int mx, int ue, int hopper) {
  static const struct { int64_t R, K; int dirty, skew; } sh[] = {
      {1024, 2048, 0, 0}, {2048, 1024, 1, 0}, {768, 2048, 0, 0}, {127, 129, 0, 0}, {129, 4112, 0, 0},
      {300, 48, 1, 0},    {1, 16, 0, 0},      {0, 128, 0, 0},    {65, 48, 0, 0},   {3, 16, 0, 0},
      {256, 160, 0, 1},   {1000, 1040, 0, 0}, {128, 128, 0, 0},  {200, 80, 0, 0}};
  enum { NT = sizeof sh / sizeof sh[0] };
  const char *fn = mx ? "mxfp8" : hopper ? "fp8-block hopper" : "fp8-block";
  quant_opts o = {.ue8m0 = ue, .scale_layout = hopper ? QLAYOUT_HOPPER_WEIGHT : QLAYOUT_ROWMAJOR};
  uint16_t *hx[NT], *dx[NT], *dbase[NT];
  uint8_t *dq[2][NT], *dsc[2][NT], *cq[NT], *csc[NT];
  size_t qb[NT], sb[NT];
  quant_stats cst[NT], *dst[2];
  quant_item it[NT];
  rl_err e = {0};
  quant_cuda_set_hw_cvt(1);
  for (int i = 0; i < NT; i++) {
    int64_t R = sh[i].R, K = sh[i].K, n = R * K;
    hx[i] = make_input(R > 0 ? R : 1, K, 500 + i, sh[i].dirty);
    CU(cudaMalloc((void **)&dbase[i], (size_t)n * 2 + 16));
    dx[i] = dbase[i] + sh[i].skew; /* skew: one element in, not 16-byte aligned */
    if (n) CU(cudaMemcpy(dx[i], hx[i], (size_t)n * 2, cudaMemcpyHostToDevice));
    qb[i] = (size_t)n;
    int64_t kb = hopper ? quant_roundup(quant_cdiv(K, 128), 4) : quant_cdiv(K, 128);
    sb[i] = mx ? (size_t)(R * quant_cdiv(K, 32)) : (size_t)(quant_cdiv(R, 128) * kb * 4);
    for (int k = 0; k < 2; k++) {
      CU(cudaMalloc((void **)&dq[k][i], qb[i] + 16));
      CU(cudaMalloc((void **)&dsc[k][i], sb[i] + 16));
      CU(cudaMemset(dq[k][i], 0xAB, qb[i] + 16));
      CU(cudaMemset(dsc[k][i], 0, sb[i] + 16));
    }
    /* the CPU reference: bytes and stats (scale padding 0 as on the device) */
    cq[i] = rl_xmalloc(qb[i] + 1), csc[i] = rl_xcalloc(sb[i] + 4, 1);
    if (mx) quant_mxfp8_cpu(hx[i], R, K, cq[i], csc[i], &o, &cst[i]);
    else quant_fp8_block_weight_cpu(hx[i], R, K, cq[i], (float *)csc[i], &o, &cst[i]);
  }
  for (int k = 0; k < 2; k++) CU(cudaMalloc((void **)&dst[k], NT * sizeof(quant_stats)));
  /* reference: one single-tensor call each */
  for (int i = 0; i < NT; i++) {
    int64_t R = sh[i].R, K = sh[i].K;
    int rc = mx ? quant_mxfp8_cuda(dx[i], R, K, dq[0][i], dsc[0][i], &o, dst[0] + i, NULL, &e)
                : quant_fp8_block_weight_cuda(dx[i], R, K, dq[0][i], (float *)dsc[0][i], &o, dst[0] + i, NULL, &e);
    if (rc) printf("FAIL %s single-tensor call %d: status %d %s\n", fn, i, rc, e.msg), g.fail++;
  }
  quant_stats h0[NT], h1[NT];
  if (quant_stats_fetch_n_cuda(dst[0], h0, NT, NULL, &e)) printf("FAIL stats fetch: %s\n", e.msg), g.fail++;
  const int pers[2] = {NT, 3};
  for (int pi = 0; pi < 2; pi++) {
    const int per = pers[pi];
    size_t wb = quant_multi_ws_bytes(per);
    void *ws;
    CU(cudaMalloc(&ws, wb));
    for (int i = 0; i < NT; i++) {
      CU(cudaMemset(dq[1][i], 0xAB, qb[i] + 16));
      CU(cudaMemset(dsc[1][i], 0, sb[i] + 16));
      it[i] = (quant_item){dx[i], sh[i].R, sh[i].K, dq[1][i], dsc[1][i], dst[1] + i};
    }
    CU(cudaMemset(dst[1], 0x5A, NT * sizeof(quant_stats))); /* stale stats: the call resets them */
    int rc = mx ? quant_mxfp8_multi_cuda(it, NT, &o, ws, wb, NULL, &e)
                : quant_fp8_block_weight_multi_cuda(it, NT, &o, ws, wb, NULL, &e);
    char what[160];
    snprintf(what, sizeof what, "multi %s%s, %d per launch", fn, ue ? " ue8m0" : "", per);
    if (rc) {
      printf("FAIL %s: status %d %s\n", what, rc, e.msg), g.fail++;
    } else {
      if (quant_stats_fetch_n_cuda(dst[1], h1, NT, NULL, &e)) printf("FAIL stats fetch: %s\n", e.msg), g.fail++;
      int f0 = g.fail, named = 0;
      for (int i = 0; i < NT; i++) {
        char w2[220];
        uint8_t *a = dup_to_host(dq[0][i], qb[i] + 16), *b = dup_to_host(dq[1][i], qb[i] + 16);
        snprintf(w2, sizeof w2, "%s %lldx%lld data (+16 guard)", what, (long long)sh[i].R, (long long)sh[i].K);
        compare(w2, a, b, qb[i] + 16);
        free(a), free(b);
        a = dup_to_host(dsc[0][i], sb[i] + 16), b = dup_to_host(dsc[1][i], sb[i] + 16);
        snprintf(w2, sizeof w2, "%s %lldx%lld scales (+16 guard)", what, (long long)sh[i].R, (long long)sh[i].K);
        compare(w2, a, b, sb[i] + 16);
        snprintf(w2, sizeof w2, "%s %lldx%lld scales vs cpu", what, (long long)sh[i].R, (long long)sh[i].K);
        compare(w2, csc[i], b, sb[i]);
        free(a), free(b);
        b = dup_to_host(dq[1][i], qb[i]);
        snprintf(w2, sizeof w2, "%s %lldx%lld data vs cpu", what, (long long)sh[i].R, (long long)sh[i].K);
        compare(w2, cq[i], b, qb[i]);
        free(b);
        int ok = h1[i].n_nonfinite == h0[i].n_nonfinite && h1[i].first_index == h0[i].first_index &&
                 h1[i].n_nonfinite == cst[i].n_nonfinite && h1[i].first_index == cst[i].first_index;
        if (!ok) {
          g.fail++;
          printf("FAIL %s tensor %d stats multi (%lld, %lld) single (%lld, %lld) cpu (%lld, %lld)\n", what, i,
                 (long long)h1[i].n_nonfinite, (long long)h1[i].first_index, (long long)h0[i].n_nonfinite,
                 (long long)h0[i].first_index, (long long)cst[i].n_nonfinite, (long long)cst[i].first_index);
        } else {
          g.pass++;
        }
        named += (h1[i].n_nonfinite > 0) == (sh[i].dirty != 0);
      }
      if (named != NT)
        printf("FAIL %s: the stats flag %d of %d tensors correctly (dirty ones only)\n", what, named, NT), g.fail++;
      printf("%s %s: %d tensors == single-tensor calls (bytes, stats), non-finite named in tensors 1 and 5 only\n",
             g.fail == f0 ? "PASS" : "FAIL", what, NT);
    }
    CU(cudaFree(ws));
  }
  for (int i = 0; i < NT; i++) {
    CU(cudaFree(dbase[i]));
    free(cq[i]), free(csc[i]);
    for (int k = 0; k < 2; k++) {
      CU(cudaFree(dq[k][i]));
      CU(cudaFree(dsc[k][i]));
    }
    free(hx[i]);
  }
  for (int k = 0; k < 2; k++) CU(cudaFree(dst[k]));
}

int main(int argc, char **argv) {
  int dev = 0;
  if (cudaGetDeviceCount(&dev) != cudaSuccess || dev == 0) {
    printf("quant_gpu_test: no GPU — skipped\n");
    return 0;
  }
  rl_err e;
  int64_t mism = 0, first = 0;
  double t0 = rl_now();
  if (quant_cuda_selftest_e4m3(&mism, &first, &e) != 0) {
    printf("FAIL e4m3 selftest: %s\n", e.msg);
    g.fail++;
  } else if (mism) {
    printf("FAIL e4m3 hw cvt vs software over all 2^32 FP32: %lld differ, first 0x%08llx\n", (long long)mism,
           (long long)first);
    g.fail++;
  } else {
    printf("PASS e4m3 hw cvt == software on all 2^32 FP32 patterns (%.2fs)\n", rl_now() - t0);
    g.pass++;
  }
  int64_t fm[4];
  static const char *fname[4] = {"E2M1 RNE encoder", "E2M1 SR encoder", "division (FP32 bits)",
                                 "division (E4M3 codes)"};
  t0 = rl_now();
  if (quant_cuda_selftest_fast(fm, &e) != 0) {
    printf("FAIL fast-path selftest: %s\n", e.msg);
    g.fail++;
  } else {
    for (int i = 0; i < 4; i++) {
      printf("%s fast %-22s == formats.h/__fdiv_rn: %lld mismatches\n", fm[i] ? "FAIL" : "PASS", fname[i],
             (long long)fm[i]);
      fm[i] ? g.fail++ : g.pass++;
    }
    printf("     (fast-path selftests %.2fs)\n", rl_now() - t0);
  }
  check_layouts();
  for (int mx = 0; mx < 2; mx++)
    for (int ue = 0; ue < 2 - mx; ue++)
      for (int hop = 0; hop < 2 - mx; hop++) check_multi(mx, ue, hop);
  struct { int64_t R, K; int dirty; } shapes[] = {{1, 1, 0},     {1, 1, 1},       {7, 33, 1},      {127, 129, 0},
                                                 {127, 129, 1}, {300, 4096, 0},  {300, 4096, 1},  {129, 4112, 0},
                                                 {129, 4112, 1}, {3, 16, 1},     {65, 48, 1},     {1000, 1040, 1},
                                                 {4096, 4096, 1}, {8192, 8192, 0}};
  /* The adversarial inputs of test_quant_doc.c (ties after scaling, amax = 448·2^k,
   * the BF16 maximum as an outlier, subnormal quotients, -0 blocks, K = 1, 17, 129, 200),
   * where the CPU gives the bytes of an independent reading of FORMATS.md: the GPU
   * must give the CPU's bytes on them too. */
  static const struct {
    const char *name;
    const uint16_t *x;
    int64_t R, K;
  } doc[] = {{"act_3x129", act_3x129_x, 3, 129}, {"w_129x1", w_129x1_x, 129, 1},
             {"w_1x200", w_1x200_x, 1, 200},     {"mx_2x96", mx_2x96_x, 2, 96},
             {"nv_2x48", nv_2x48_x, 2, 48},      {"nv_1x17", nv_1x17_x, 1, 17},
             {"nv_2x16_order", nv_2x16_order_x, 2, 16}, {"nv_1x32_enc", nv_1x32_enc_x, 1, 32},
             {"nv_1x32_zero", nv_1x32_zero_x, 1, 32}};
  for (size_t i = 0; i < sizeof doc / sizeof doc[0]; i++) {
    uint16_t *dx = dup_to_device(doc[i].x, (size_t)(doc[i].R * doc[i].K) * 2);
    int f0 = g.fail;
    for (int hw = 1; hw >= 0; hw--)
      for (int v = 0; v < V_COUNT; v++) {
        check_variant(doc[i].name, doc[i].x, dx, doc[i].R, doc[i].K, v, 0, hw);
        if (v <= V_FP8A_HOP) check_variant(doc[i].name, doc[i].x, dx, doc[i].R, doc[i].K, v, 1, hw);
      }
    printf("%s %-14s FORMATS.md edge cases (tests/test_quant_doc_cases.h), hw+sw cvt\n",
           g.fail == f0 ? "PASS" : "FAIL", doc[i].name);
    CU(cudaFree(dx));
  }
  int full = argc > 1 && !strcmp(argv[1], "--quick") ? 0 : 1;
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    int64_t R = shapes[i].R, K = shapes[i].K;
    if (!full && R * K > (1 << 22)) continue;
    uint16_t *x = make_input(R, K, 1000 + i, shapes[i].dirty);
    uint16_t *dx = dup_to_device(x, (size_t)(R * K) * 2);
    char shape[64];
    snprintf(shape, sizeof shape, "%lldx%lld%s", (long long)R, (long long)K, shapes[i].dirty ? "!" : "");
    int f0 = g.fail;
    double t1 = rl_now();
    for (int hw = 1; hw >= 0; hw--)
      for (int v = 0; v < V_COUNT; v++) {
        check_variant(shape, x, dx, R, K, v, 0, hw);
        if (v <= V_FP8A_HOP) check_variant(shape, x, dx, R, K, v, 1, hw);
      }
    printf("%s %-12s all quantizers, hw+sw cvt (%.1fs)\n", g.fail == f0 ? "PASS" : "FAIL", shape, rl_now() - t1);
    free(x);
    CU(cudaFree(dx));
  }
  printf("quant_gpu_test: %d checks passed, %d failed\n", g.pass, g.fail);
  return g.fail ? 1 : 0;
}
#else
int main(void) {
  printf("quant_gpu_test: built without CUDA — skipped\n");
  return 0;
}
#endif

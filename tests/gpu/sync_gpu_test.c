/* sync_gpu_test.c — the sync stage on GPUs (stages/sync.h); run on the GPU
 * machine from the repo root (needs nvidia-h200-x2 for the NCCL part; with
 * one GPU that part says SKIP).
 *
 *   build/gpu/sync_gpu_test       one line per check, exit 1 on any FAIL
 *
 * Checks, on a random dense Qwen3 (hidden 256, 2 layers, FFN 80: a K that
 * mxfp8 keeps BF16 in the down projection) and a Qwen3-MoE (4 experts):
 *   colocated (GPU 0): sync_colocated on the device = model_cuda_quantize;
 *     every entry of the device view equals the CPU model_quantize bytes
 *     (fp8-block scales after conversion from cuBLASLt's layout), and
 *     sync.verify passes — fp8-block, mxfp8, nvfp4 experts, bf16; one model
 *     re-quantized again and again (formats switched: buffers freed and made
 *     again) still equal to the CPU each time; NaN/Inf in two device masters
 *     refused naming the first tensor in layer order;
 *   separate (trainer GPU 0 → rollout GPU 1 over NCCL, buckets 64 KiB and
 *     512 MiB): every byte received equals the byte sent, verify passes, the
 *     rollout GPU's logits equal the trainer GPU's bit for bit (same weights,
 *     same policy), an injected corrupt byte (RLRUN_FAULT=sync.corrupt) is
 *     caught naming the tensor, and a fresh sync repairs it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "stages/sync.h"
#include "state/fault.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

static struct {
  int pass, fail;
} g;

/* Record one check: a line PASS/FAIL with the message. */
static int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  ok ? g.pass++ : g.fail++;
  return ok;
}

/* Stop on a failed call that the rest depends on. */
#define MUST(call)                                                       \
  do {                                                                   \
    if ((call) != 0) {                                                   \
      printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, e.msg); \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

/* A random model: dense (moe 0) or MoE (layer 1 with 4 experts, top-2). */
static model *rand_model(int moe, uint32_t seed) {
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = moe ? MODEL_KIND_QWEN3_MOE : MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "%s", moe ? "qwen3_moe" : "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = 512, c.hidden_size = 256, c.intermediate_size = moe ? 768 : 80, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 64;
  c.max_position_embeddings = 256, c.rms_norm_eps = 1e-6, c.rope_theta = 10000.0, c.rope_factor = 1.0;
  c.tie_word_embeddings = !moe, c.bos_token_id = -1, c.pad_token_id = -1;
  int64_t mo[1] = {0};
  if (moe) {
    c.num_experts = 4, c.num_experts_per_tok = 2, c.moe_intermediate_size = 160;
    c.decoder_sparse_step = 1, c.norm_topk_prob = 1, c.mlp_only_layers = mo, c.n_mlp_only_layers = 1;
  }
  model *m = NULL;
  rl_err e = {0};
  MUST(model_create(&c, NULL, &m, &e));
  uint32_t s = seed;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    for (int64_t j = 0; j < p->rows * p->cols; j++) {
      s = s * 1664525u + 1013904223u;
      float v = p->cols == 1 ? 0.5f + (float)(s >> 8) / 16777216.0f : ((float)(s >> 8) / 8388608.0f - 1.0f) * 0.05f;
      uint32_t b;
      memcpy(&b, &v, 4);
      p->w[j] = (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
    }
  }
  return m;
}

/* Device bytes of entry i of view v into host memory, in the host layout. */
static uint8_t *fetch_entry(const sync_manifest *mf, const sync_view *v, int i, uint64_t *n) {
  const sync_entry *x = &mf->v[i];
  uint8_t *b = rl_xmalloc(x->bytes + 16);
  cudaMemcpy(b, v->ptr[i], x->bytes, cudaMemcpyDeviceToHost);
  *n = x->bytes;
  if (x->part == SYNC_PART_SCALES && x->fmt == QFMT_FP8_BLOCK) {
    int64_t nb = quant_cdiv(x->rows, 128), kb = quant_cdiv(x->cols, 128);
    float *rm = rl_xmalloc((size_t)(nb * kb) * 4 + 4);
    quant_layout_fp8_weight_scales_from_cublaslt((const float *)b, nb, kb, rm);
    free(b);
    *n = (uint64_t)(nb * kb) * 4;
    return (uint8_t *)rm;
  }
  return b;
}

static void device_eq_cpu(model *m, quant_policy p, const char *kind, const char *what);

/* Colocated on GPU 0: device view == CPU model_quantize, and verify passes. */
static void test_colocated(int moe, const char *what, quant_policy p) {
  rl_err e = {0};
  model *m = rand_model(moe, 7 + moe);
  cudaSetDevice(0);
  MUST(model_cuda_init(m, &e));
  sync_opts o = {.verify = 1};
  sync_stats st;
  int rc = sync_colocated(m, &p, &o, &st, &e);
  check(rc == 0 && st.verified, "colocated %s %s: device re-quantization verified against the CPU reference (%.3f ms, "
        "%llu bytes)%s%s", moe ? "moe" : "dense", what, st.ms, (unsigned long long)st.bytes, rc ? ": " : "", rc ? e.msg : "");
  device_eq_cpu(m, p, moe ? "moe" : "dense", what);
  model_free(m);
}

/* The device view of m (quantized in p) == the CPU model_quantize of its
 * masters, entry by entry (one check line). */
static void device_eq_cpu(model *m, quant_policy p, const char *kind, const char *what) {
  rl_err e = {0};
  sync_manifest mh, md;
  sync_view vh, vd;
  MUST(model_quantize(m, &p, &e));
  MUST(sync_manifest_build(m, &p, 0, 0, &mh, &e));
  MUST(sync_manifest_build(m, &p, 1, 0, &md, &e));
  MUST(sync_view_host(&mh, m, &vh, &e));
  MUST(sync_view_device(&md, m, &vd, &e));
  int bad = -1;
  for (int i = 0; i < mh.n && bad < 0; i++) {
    uint64_t n;
    uint8_t *b = fetch_entry(&md, &vd, i, &n);
    if (n != mh.v[i].bytes || memcmp(b, vh.ptr[i], n)) bad = i;
    free(b);
  }
  check(bad < 0 && mh.n == md.n, "colocated %s %s: %d tensors of the device view == CPU model_quantize bytes%s%s",
        kind, what, mh.n, bad >= 0 ? ", first difference: " : "", bad >= 0 ? mh.v[bad].name : "");
  sync_view_free(&vh), sync_view_free(&vd);
  sync_manifest_free(&mh), sync_manifest_free(&md);
}

/* Store one BF16 pattern at element j of the device master of parameter `name`. */
static void poke_master(model *m, const char *name, int64_t j, uint16_t v) {
  const model_param *p = model_find_param(m, name);
  if (!p) {
    printf("FAIL no parameter %s\n", name);
    exit(1);
  }
  cudaMemcpy(model_cuda_param_at(m, (int)(p - m->params))->w + j, &v, 2, cudaMemcpyHostToDevice);
}

/* model_cuda_quantize called again and again on one model (GPU 0): formats
 * switched (fp8-block → mxfp8 → bf16 → fp8-block, buffers freed and made
 * again), each time == the CPU bytes; a NaN in a device master, then -Inf
 * in an earlier one too: refused naming the first in layer order (row and
 * column), exit 2; the masters repaired, the next call succeeds (stale stats
 * do not leak into it). */
static void test_requantize(int moe) {
  rl_err e = {0};
  const char *kind = moe ? "moe" : "dense";
  model *m = rand_model(moe, 21 + moe);
  cudaSetDevice(0);
  MUST(model_cuda_init(m, &e));
  static const struct { const char *name; qformat f, ef; } steps[] = {
      {"requantize fp8-block", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK},
      {"requantize fp8-block again", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK},
      {"requantize mxfp8", QFMT_MXFP8, QFMT_MXFP8},
      {"requantize bf16", QFMT_BF16, QFMT_BF16},
      {"requantize fp8-block after bf16", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK},
      {"requantize nvfp4 experts", QFMT_FP8_BLOCK, QFMT_NVFP4}};
  quant_policy p;
  for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
    if (steps[k].ef == QFMT_NVFP4 && !moe) continue;
    quant_policy_init(&p, steps[k].f, steps[k].ef);
    p.emulate = 1;
    int rc = model_cuda_quantize(m, &p, &e);
    check(rc == 0, "colocated %s %s: model_cuda_quantize%s%s", kind, steps[k].name, rc ? ": " : "", rc ? e.msg : "");
    if (!rc) device_eq_cpu(m, p, kind, steps[k].name);
  }
  /* NaN in a later tensor alone, then -Inf in an earlier one too: the earlier is named */
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  p.emulate = 1;
  const char *later = moe ? "model.layers.1.mlp.experts.2.down_proj.weight" : "model.layers.1.mlp.down_proj.weight";
  const char *first = "model.layers.1.self_attn.o_proj.weight";
  for (int round = 0; round < 2; round++) {
    const char *name = round ? first : later;
    int64_t K = model_find_param(m, name)->cols;
    poke_master(m, name, 3 * K + 7, round ? 0xFF80 : 0x7FC0); /* row 3, column 7 */
    rl_err_clear(&e);
    int rc = model_cuda_quantize(m, &p, &e);
    char want[256];
    snprintf(want, sizeof want, "%s: 1 non-finite value(s) (Inf/NaN), first at row 3, column 7", name);
    check(rc == RL_EXIT_USAGE && strstr(e.msg, want) && strstr(e.msg, "model_cuda_quantize: "),
          "colocated %s: non-finite master%s refused naming %s (exit %d): %s", kind, round ? "s" : "", name, rc, e.msg);
  }
  MUST(model_cuda_upload(m, &e)); /* the host masters are finite */
  int rc = model_cuda_quantize(m, &p, &e);
  check(rc == 0, "colocated %s: repaired masters quantize again%s%s", kind, rc ? ": " : "", rc ? e.msg : "");
  if (!rc) device_eq_cpu(m, p, kind, "after repair");
  model_free(m);
}

/* Logits [T, V] of m on its GPU for a fixed batch (host copy). */
static float *logits_of(model *m, int dev) {
  rl_err e = {0};
  static const int32_t tok[12] = {1, 5, 9, 200, 3, 77, 511, 0, 42, 42, 8, 300};
  int32_t off[3] = {0, 5, 12};
  model_batch b = {.T = 12, .tokens = tok, .seqs = {.n_seq = 2, .off = off}};
  cudaSetDevice(dev);
  model_cuda_acts *a = model_cuda_acts_new();
  float *out = rl_xmalloc((size_t)12 * m->V * 4);
  MUST(model_cuda_forward(m, &b, NULL, a, &e));
  MUST(model_cuda_logits_to_host(a, out, &e));
  model_cuda_acts_free(a);
  return out;
}

/* Trainer on GPU 0, rollout on GPU 1, NCCL buckets of `bucket` bytes. */
static void test_separate(int moe, const char *what, quant_policy p, uint64_t bucket) {
  rl_err e = {0};
  model *mt = rand_model(moe, 11), *mr = rand_model(moe, 12);
  cudaSetDevice(0);
  MUST(model_cuda_init(mt, &e));
  cudaSetDevice(1);
  MUST(model_cuda_init(mr, &e));
  MUST(model_cuda_quantize(mr, &p, &e)); /* the rollout engine's own views (stale weights) */
  sync_nccl *s = NULL;
  const int rdev[1] = {1};
  MUST(sync_nccl_open(0, rdev, 1, bucket, &s, &e));
  sync_opts o = {.verify = 1};
  sync_stats st;
  int rc = sync_nccl_run(s, mt, &mr, &p, &o, &st, &e);
  check(rc == 0 && st.verified, "nccl %s %s bucket %llu: sync verified (%lld buckets, %llu bytes, %.3f ms: quantize %.3f, "
        "transfer %.3f)%s%s", moe ? "moe" : "dense", what, (unsigned long long)bucket, (long long)st.buckets,
        (unsigned long long)st.bytes, st.ms, st.quant_ms, st.transfer_ms, rc ? ": " : "", rc ? e.msg : "");
  /* bytes received == bytes sent, entry by entry */
  sync_manifest mf;
  sync_view vt, vr;
  MUST(sync_manifest_build(mt, &p, 1, bucket, &mf, &e));
  MUST(sync_view_device(&mf, mt, &vt, &e));
  MUST(sync_view_device(&mf, mr, &vr, &e));
  int bad = -1;
  uint64_t total = 0;
  for (int i = 0; i < mf.n && bad < 0; i++) {
    uint8_t *a = rl_xmalloc(mf.v[i].bytes + 1), *b = rl_xmalloc(mf.v[i].bytes + 1);
    cudaMemcpy(a, vt.ptr[i], mf.v[i].bytes, cudaMemcpyDeviceToHost);
    cudaMemcpy(b, vr.ptr[i], mf.v[i].bytes, cudaMemcpyDeviceToHost);
    if (memcmp(a, b, mf.v[i].bytes)) bad = i;
    total += mf.v[i].bytes;
    free(a), free(b);
  }
  check(bad < 0 && total == st.bytes, "nccl %s %s: bytes received == bytes sent (%llu bytes, %d tensors)%s%s",
        moe ? "moe" : "dense", what, (unsigned long long)total, mf.n, bad >= 0 ? ", first difference: " : "",
        bad >= 0 ? mf.v[bad].name : "");
  /* the same weights give the same logits on both GPUs, bit for bit */
  float *lt = logits_of(mt, 0), *lr = logits_of(mr, 1);
  check(!memcmp(lt, lr, (size_t)12 * mt->V * 4), "nccl %s %s: rollout GPU logits == trainer GPU logits (bitwise)",
        moe ? "moe" : "dense", what);
  free(lt), free(lr);
  /* a corrupted byte on the rollout side is caught, naming the tensor; a fresh sync repairs it */
  setenv("RLRUN_FAULT", "sync.corrupt", 1);
  fault_reset();
  rc = sync_nccl_run(s, mt, &mr, &p, &o, &st, &e);
  int named = rc == RL_EXIT_FAIL && strstr(e.msg, "sync.verify: tensor ") && strstr(e.msg, ".weight");
  check(named || !mf.quantized, "nccl %s %s: corrupted byte caught: %s", moe ? "moe" : "dense", what,
        rc ? e.msg : "(not caught)");
  unsetenv("RLRUN_FAULT");
  fault_reset();
  rc = sync_nccl_run(s, mt, &mr, &p, &o, &st, &e);
  check(rc == 0, "nccl %s %s: a fresh sync repairs it%s%s", moe ? "moe" : "dense", what, rc ? ": " : "", rc ? e.msg : "");
  static int partial_done;
  if (!partial_done++) {
    /* a broadcast launched on the train GPU alone (its receivers never come): the failure
     * aborts the communicators at once, so this returns, the object refuses another sync,
     * and the teardown below (close, frees) does not wait for good */
    setenv("RLRUN_FAULT", "sync.partial", 1);
    fault_reset();
    double t0 = rl_now();
    rc = sync_nccl_run(s, mt, &mr, &p, &o, &st, &e);
    check(rc == RL_EXIT_FAIL && strstr(e.msg, "sync.partial"), "nccl %s %s: a transfer launched on one rank fails "
          "and returns (%.2f s): %s", moe ? "moe" : "dense", what, rl_now() - t0, rc ? e.msg : "(no error)");
    unsetenv("RLRUN_FAULT");
    fault_reset();
    rc = sync_nccl_run(s, mt, &mr, &p, &o, &st, &e);
    check(rc == RL_EXIT_FAIL && strstr(e.msg, "aborted"), "nccl %s %s: after it, a sync is refused: %s",
          moe ? "moe" : "dense", what, rc ? e.msg : "(no error)");
  }
  sync_view_free(&vt), sync_view_free(&vr);
  sync_manifest_free(&mf);
  sync_nccl_close(s);
  cudaSetDevice(1);
  model_free(mr);
  cudaSetDevice(0);
  model_free(mt);
}

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
    printf("SKIP no GPU\n");
    return 0;
  }
  struct {
    const char *name;
    qformat f, ef;
    int moe;
  } cases[] = {{"fp8-block", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, 0}, {"mxfp8", QFMT_MXFP8, QFMT_MXFP8, 0},
               {"bf16", QFMT_BF16, QFMT_BF16, 0},                {"fp8-block", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, 1},
               {"nvfp4-experts", QFMT_FP8_BLOCK, QFMT_NVFP4, 1}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    quant_policy p;
    quant_policy_init(&p, cases[i].f, cases[i].ef);
    p.emulate = 1;
    test_colocated(cases[i].moe, cases[i].name, p);
  }
  test_requantize(0);
  test_requantize(1);
  if (n < 2) {
    printf("SKIP nccl: %d GPU (needs nvidia-h200-x2)\n", n);
  } else {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
      quant_policy p;
      quant_policy_init(&p, cases[i].f, cases[i].ef);
      p.emulate = 1;
      test_separate(cases[i].moe, cases[i].name, p, 64u << 10);
      if (i == 0 || i == 4) test_separate(cases[i].moe, cases[i].name, p, 0);
    }
  }
  printf("sync_gpu_test: %d passed, %d failed\n", g.pass, g.fail);
  return g.fail ? 1 : 0;
}

#else
int main(void) {
  printf("SKIP sync_gpu_test: built without CUDA\n");
  return 0;
}
#endif

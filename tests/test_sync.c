/* test_sync.c — the sync stage (stages/sync.h) on the CPU: the manifest of
 * the rollout view, bucket pack → host transport → unpack round trips (1 KiB
 * … larger than the model, tensors spanning buckets), verify passing on a
 * correct sync and naming the tensor of a corrupted data / scale / S_dec
 * byte, the colocated sync's timing and metrics, the fault points, the
 * fixed-order gradient sum, and the run loop with sync.verify: true (metrics
 * recorded; an injected corruption stops the run naming the tensor, and the
 * run resumes). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stages/sync.h"
#include "state/fault.h"
#include "state/store.h"
#include "train_util.h"

/* A policy of format f for attention + MLP and ef for the experts. */
static quant_policy ts_policy(qformat f, qformat ef) {
  quant_policy p;
  quant_policy_init(&p, f, ef);
  return p;
}

/* Expected manifest size of tu_micro_model(0, …, 64): every quantized
 * linear's data + scales in fp8-block (rows×cols + ceil(r/128)·ceil(c/128)·4). */
TEST(sync_manifest_layout_names_and_alignment) {
  model *m = tu_micro_model(0, 0, 64, 11);
  REQUIRE(m);
  quant_policy p = ts_policy(QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  sync_manifest mf, mf2, mfd;
  rl_err e = {0};
  REQUIRE(sync_manifest_build(m, &p, 0, 1024, &mf, &e) == 0);
  REQUIRE(sync_manifest_build(m, &p, 0, 1024, &mf2, &e) == 0);
  REQUIRE(sync_manifest_build(m, &p, 1, 1024, &mfd, &e) == 0);
  CHECK_EQ_U64(mf.digest, mf2.digest);
  CHECK(mf.digest != mfd.digest); /* device scale layout differs */
  /* q_proj [32][64]: data 2048 bytes, scales 1 block = 4 bytes (device: padded to 4 blocks = 16) */
  int iq = sync_manifest_find(&mf, "model.layers.0.self_attn.q_proj.weight");
  int is = sync_manifest_find(&mf, "model.layers.0.self_attn.q_proj.weight_scale_inv");
  REQUIRE(iq >= 0 && is == iq + 1);
  CHECK_EQ_I64(mf.v[iq].bytes, 32 * 64);
  CHECK_EQ_I64(mf.v[is].bytes, 4);
  CHECK_EQ_I64(mfd.v[is].bytes, 16);
  CHECK_EQ_I64(mf.v[iq].part, SYNC_PART_DATA);
  /* norms and embeddings stay BF16 masters; tied embeddings: lm_head is BF16, no extra entry */
  int ie = sync_manifest_find(&mf, "model.embed_tokens.weight");
  REQUIRE(ie >= 0);
  CHECK_EQ_I64(mf.v[ie].part, SYNC_PART_BF16);
  CHECK_EQ_I64(mf.v[ie].bytes, 32 * 64 * 2);
  CHECK(sync_manifest_find(&mf, "lm_head.weight") < 0);
  CHECK(sync_manifest_find(&mf, "model.layers.1.input_layernorm.weight") >= 0);
  uint64_t quant = 0, payload = 0;
  for (int i = 0; i < mf.n; i++) {
    CHECK_EQ_I64(mf.v[i].offset % SYNC_ALIGN, 0);
    if (i) CHECK(mf.v[i].offset >= mf.v[i - 1].offset + mf.v[i - 1].bytes);
    payload += mf.v[i].bytes;
    if (mf.v[i].part != SYNC_PART_BF16) quant += mf.v[i].bytes;
  }
  /* per layer: q,k,v,o + gate,up,down quantized; q [32,64] k,v [16,64] o [64,32] gate,up [24,64] down [64,24] */
  int64_t per_layer = (2048 + 4) + 2 * (1024 + 4) + (2048 + 4) + 2 * (1536 + 4) + (1536 + 4);
  CHECK_EQ_I64(mf.quantized, 2 * per_layer);
  CHECK_EQ_I64(quant, mf.quantized);
  CHECK_EQ_I64(payload, mf.payload);
  CHECK_EQ_I64(mf.n_buckets, (int64_t)((mf.total + 1023) / 1024));
  /* a different policy gives a different manifest */
  quant_policy pm = ts_policy(QFMT_MXFP8, QFMT_MXFP8);
  sync_manifest mfm;
  REQUIRE(sync_manifest_build(m, &pm, 0, 1024, &mfm, &e) == 0);
  CHECK(mfm.digest != mf.digest);
  /* mxfp8: down_proj has K = 24 (not a multiple of 32): stays a BF16 master */
  int id = sync_manifest_find(&mfm, "model.layers.0.mlp.down_proj.weight");
  REQUIRE(id >= 0);
  CHECK_EQ_I64(mfm.v[id].part, SYNC_PART_BF16);
  CHECK(sync_manifest_find(&mfm, "model.layers.0.mlp.up_proj.weight_scale_inv") >= 0);
  sync_manifest_free(&mf), sync_manifest_free(&mf2), sync_manifest_free(&mfd), sync_manifest_free(&mfm);
  model_free(m);
}

/* Transfer src's rollout view (policy p) to a differently-initialised model
 * through the host transport with `bucket` bytes; every entry identical,
 * and verify against src's master passes. */
static void ts_round_trip(int moe, quant_policy p, uint64_t bucket) {
  model *src = tu_micro_model(moe, 0, 64, 21), *dst = tu_micro_model(moe, 0, 64, 99);
  REQUIRE(src && dst);
  rl_err e = {0};
  REQUIRE(model_quantize(src, &p, &e) == 0);
  REQUIRE(model_quantize(dst, &p, &e) == 0); /* the receive buffers */
  sync_manifest ms, md;
  sync_view vs, vd;
  REQUIRE(sync_manifest_build(src, &p, 0, bucket, &ms, &e) == 0);
  REQUIRE(sync_manifest_build(dst, &p, 0, bucket, &md, &e) == 0);
  REQUIRE(sync_view_host(&ms, src, &vs, &e) == 0);
  REQUIRE(sync_view_host(&md, dst, &vd, &e) == 0);
  /* before: the views differ (different weights), and verify says so */
  CHECK(sync_verify(&md, src, &vd, &e) == RL_EXIT_FAIL);
  /* how many entries straddle a bucket boundary */
  int spanning = 0;
  for (int i = 0; i < ms.n; i++)
    spanning += ms.v[i].offset / bucket != (ms.v[i].offset + ms.v[i].bytes - 1) / bucket;
  if (bucket <= 4096) CHECK_MSG(spanning > 0, "bucket %llu: no tensor spans buckets", (unsigned long long)bucket);
  if (bucket > ms.total) CHECK_EQ_I64(ms.n_buckets, 1);
  sync_link t = sync_link_host();
  sync_stats st;
  REQUIRE(sync_transfer_host(&ms, &vs, &md, &vd, &t, &st, &e) == 0);
  CHECK_EQ_I64(st.buckets, ms.n_buckets);
  CHECK_EQ_I64(st.bytes, ms.payload);
  int bad = 0;
  for (int i = 0; i < ms.n; i++)
    if (memcmp(vs.ptr[i], vd.ptr[i], ms.v[i].bytes)) {
      if (!bad++) harness_fail(__FILE__, __LINE__, "bucket %llu: %s differs after the transfer",
                               (unsigned long long)bucket, ms.v[i].name);
    }
  int rc = sync_verify(&md, src, &vd, &e);
  CHECK_MSG(rc == 0, "verify after a correct sync: %s", e.msg);
  sync_view_free(&vs), sync_view_free(&vd);
  sync_manifest_free(&ms), sync_manifest_free(&md);
  model_free(src), model_free(dst);
}

TEST(sync_bucket_round_trip_every_size_and_format) {
  const uint64_t sizes[] = {1024, 1000, 4096, 65536, 1u << 30};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes && !harness_failed(); i++) {
    ts_round_trip(0, ts_policy(QFMT_FP8_BLOCK, QFMT_FP8_BLOCK), sizes[i]);
    ts_round_trip(0, ts_policy(QFMT_MXFP8, QFMT_MXFP8), sizes[i]);
    ts_round_trip(1, ts_policy(QFMT_FP8_BLOCK, QFMT_NVFP4), sizes[i]);
  }
  ts_round_trip(0, ts_policy(QFMT_BF16, QFMT_BF16), 1024);
}

TEST(sync_manifest_mismatch_is_refused) {
  model *a = tu_micro_model(0, 0, 64, 1), *b = tu_micro_model(0, 0, 32, 1);
  REQUIRE(a && b);
  quant_policy p = ts_policy(QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  rl_err e = {0};
  REQUIRE(model_quantize(a, &p, &e) == 0 && model_quantize(b, &p, &e) == 0);
  sync_manifest ma, mb;
  sync_view va, vb;
  REQUIRE(sync_manifest_build(a, &p, 0, 4096, &ma, &e) == 0 && sync_manifest_build(b, &p, 0, 4096, &mb, &e) == 0);
  REQUIRE(sync_view_host(&ma, a, &va, &e) == 0 && sync_view_host(&mb, b, &vb, &e) == 0);
  sync_link t = sync_link_host();
  CHECK_EQ_I64(sync_transfer_host(&ma, &va, &mb, &vb, &t, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "manifests differ");
  /* a view in another policy than the manifest's is refused, naming the tensor */
  quant_policy pm = ts_policy(QFMT_MXFP8, QFMT_MXFP8);
  sync_manifest mm;
  sync_view vm;
  REQUIRE(sync_manifest_build(a, &pm, 0, 4096, &mm, &e) == 0);
  CHECK_EQ_I64(sync_view_host(&mm, a, &vm, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "model.layers.0.self_attn.q_proj.weight");
  sync_manifest_free(&mm);
  sync_view_free(&va), sync_view_free(&vb);
  sync_manifest_free(&ma), sync_manifest_free(&mb);
  model_free(a), model_free(b);
}

/* Flip byte `at` of entry `name` in view v; verify must fail naming it. */
static void ts_expect_caught(const sync_manifest *mf, const sync_view *v, const model *master, const char *name,
                             uint64_t at) {
  int i = sync_manifest_find(mf, name);
  REQUIRE(i >= 0);
  uint8_t *p = (uint8_t *)v->ptr[i] + at;
  *p ^= 0x10;
  rl_err e = {0};
  CHECK_EQ_I64(sync_verify(mf, master, v, &e), RL_EXIT_FAIL);
  char want[160];
  snprintf(want, sizeof want, "tensor %s (", name);
  CHECK_CONTAINS(e.msg, want);
  snprintf(want, sizeof want, "at byte %llu of", (unsigned long long)at);
  CHECK_CONTAINS(e.msg, want);
  *p ^= 0x10;
  CHECK_EQ_I64(sync_verify(mf, master, v, &e), 0);
}

TEST(sync_verify_catches_a_corrupted_byte) {
  model *src = tu_micro_model(1, 0, 64, 5), *dst = tu_micro_model(1, 0, 64, 6);
  REQUIRE(src && dst);
  quant_policy p = ts_policy(QFMT_FP8_BLOCK, QFMT_NVFP4);
  rl_err e = {0};
  REQUIRE(model_quantize(src, &p, &e) == 0 && model_quantize(dst, &p, &e) == 0);
  sync_manifest ms, md;
  sync_view vs, vd;
  REQUIRE(sync_manifest_build(src, &p, 0, 2048, &ms, &e) == 0 && sync_manifest_build(dst, &p, 0, 2048, &md, &e) == 0);
  REQUIRE(sync_view_host(&ms, src, &vs, &e) == 0 && sync_view_host(&md, dst, &vd, &e) == 0);
  sync_link t = sync_link_host();
  REQUIRE(sync_transfer_host(&ms, &vs, &md, &vd, &t, NULL, &e) == 0);
  REQUIRE(sync_verify(&md, src, &vd, &e) == 0);
  ts_expect_caught(&md, &vd, src, "model.layers.1.self_attn.o_proj.weight", 777);
  ts_expect_caught(&md, &vd, src, "model.layers.0.self_attn.k_proj.weight_scale_inv", 2);
  ts_expect_caught(&md, &vd, src, "model.layers.1.mlp.experts.2.up_proj.weight", 100);
  ts_expect_caught(&md, &vd, src, "model.layers.1.mlp.experts.3.down_proj.weight_scale", 5);
  ts_expect_caught(&md, &vd, src, "model.layers.1.mlp.experts.0.gate_proj.weight_scale_2", 3);
  ts_expect_caught(&md, &vd, src, "model.norm.weight", 1);
  /* the reference of an entry equals what the model's own quantize made */
  int i = sync_manifest_find(&ms, "model.layers.1.mlp.experts.1.gate_proj.weight_scale_2");
  REQUIRE(i >= 0);
  uint8_t ref[16];
  CHECK_EQ_I64(sync_reference_entry(&ms, i, src, ref, &e), 4);
  CHECK(memcmp(ref, vs.ptr[i], 4) == 0);
  sync_view_free(&vs), sync_view_free(&vd);
  sync_manifest_free(&ms), sync_manifest_free(&md);
  model_free(src), model_free(dst);
}

TEST(sync_colocated_times_verifies_and_reports_metrics) {
  model *m = tu_micro_model(0, 0, 64, 3);
  REQUIRE(m);
  quant_policy p = ts_policy(QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  rl_err e = {0};
  sync_opts o = {.verify = 1};
  sync_stats st;
  int rc = sync_colocated(m, &p, &o, &st, &e);
  REQUIRE(rc == 0);
  CHECK(m->quantized);
  CHECK_EQ_I64(st.verified, 1);
  int64_t per_layer = (2048 + 4) + 2 * (1024 + 4) + (2048 + 4) + 2 * (1536 + 4) + (1536 + 4);
  CHECK_EQ_I64(st.bytes, 2 * per_layer);
  CHECK(st.ms >= 0 && st.ms < 10000);
  CHECK_EQ_I64(st.buckets, 0);
  rl_metric_list ml = {0};
  sync_stats_metrics(&st, &ml);
  int found = 0;
  CHECK_EQ_I64((int64_t)rl_metric_get(&ml, SYNC_M_BYTES, &found), 2 * per_layer);
  CHECK(found);
  rl_metric_get(&ml, SYNC_M_MS, &found);
  CHECK(found);
  rl_metric_get(&ml, SYNC_M_GBPS, &found);
  CHECK(found);
  rl_metric_get(&ml, SYNC_M_VERIFY_MS, &found);
  CHECK(found);
  rl_metric_list_free(&ml);
  /* the fault points corrupt the view after the re-quantization: verify names the tensor */
  setenv("RLRUN_FAULT", "sync.corrupt", 1);
  fault_reset();
  CHECK_EQ_I64(sync_colocated(m, &p, &o, &st, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "tensor model.layers.0.self_attn.q_proj.weight (quantized data, fp8-block)");
  setenv("RLRUN_FAULT", "sync.corrupt_scale", 1);
  fault_reset();
  CHECK_EQ_I64(sync_colocated(m, &p, &o, &st, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "tensor model.layers.0.self_attn.q_proj.weight_scale_inv (scales, fp8-block)");
  /* without verify the corruption goes unnoticed (what verify is for) */
  o.verify = 0;
  fault_reset();
  CHECK_EQ_I64(sync_colocated(m, &p, &o, &st, &e), 0);
  unsetenv("RLRUN_FAULT");
  fault_reset();
  o.verify = 1;
  CHECK_EQ_I64(sync_colocated(m, &p, &o, &st, &e), 0); /* a fresh sync repairs it */
  model_free(m);
}

TEST(sync_dp_sum_fixed_is_rank_ordered) {
  /* 1e8 + 1 − 1e8 in FP32: rank order gives 0 (1 is lost), another order gives 1 */
  float r0[2] = {1e8f, 0.5f}, r1[2] = {1.0f, 0.25f}, r2[2] = {-1e8f, 0.125f}, out[2];
  const float *g[3] = {r0, r1, r2};
  sync_dp_sum_fixed(g, 3, 2, out);
  CHECK_EQ_U64(out[0] == 0.0f, 1);
  CHECK_NEAR(out[1], 0.875, 0);
  const float *h[3] = {r0, r2, r1};
  sync_dp_sum_fixed(h, 3, 2, out);
  CHECK_NEAR(out[0], 1.0, 0);
}

TEST(sync_dp_open_refusals) {
  sync_dp *d = NULL;
  rl_err e = {0};
  int one[1] = {0}, twice[2] = {0, 0}, far[2] = {0, 99};
#if RLRUN_CUDA
  CHECK_EQ_I64(sync_dp_open(one, 1, 0, &d, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "data parallelism: 1 ranks; name 2");
  CHECK(d == NULL);
  int rc = sync_dp_open(twice, 2, 0, &d, &e); /* no GPU: 3; with GPUs: GPU 0 twice is a usage error */
  CHECK(rc == RL_EXIT_HARDWARE || (rc == RL_EXIT_USAGE && strstr(e.msg, "GPU 0 is rank 0 and rank 1")));
  CHECK_EQ_I64(sync_dp_open(far, 2, 0, &d, &e), RL_EXIT_HARDWARE);
#else
  (void)one, (void)twice;
  CHECK_EQ_I64(sync_dp_open(far, 2, 0, &d, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "built without CUDA/NCCL; data parallelism needs GPUs");
#endif
  CHECK(d == NULL);
  sync_dp_close(NULL);
  CHECK_EQ_I64(sync_dp_ranks(NULL), 0);
}

TEST(sync_nccl_refuses_one_gpu_or_no_cuda) {
  /* the same GPU for trainer and rollout is refused in every build (colocated syncs on the device) */
  sync_nccl *s = NULL;
  rl_err e = {0};
  const int same[1] = {0}, twice[2] = {1, 1};
  CHECK_EQ_I64(sync_nccl_open(0, same, 1, 0, &s, &e), RL_EXIT_HARDWARE);
  CHECK(s == NULL);
  /* a rollout GPU named twice (or missing), and no rollout GPU at all */
  CHECK_EQ_I64(sync_nccl_open(0, twice, 2, 0, &s, &e), RL_EXIT_HARDWARE);
  CHECK(s == NULL);
  CHECK(sync_nccl_open(0, twice, 0, 0, &s, &e) != 0);
  CHECK(s == NULL);
  CHECK_EQ_I64(sync_nccl_receivers(NULL), 0);
#if !RLRUN_CUDA
  CHECK_CONTAINS(e.msg, "built without CUDA");
#endif
}

/* ---------------------------------------------------------------- the run loop */

/* The rlrun binary as an absolute path. */
static const char *ts_bin(void) {
  static char p[PATH_MAX];
  if (!p[0] && !realpath(harness_bin(), p)) snprintf(p, sizeof p, "%s", harness_bin());
  return p;
}

/* A tiny fp8-block-rollout recipe with sync.verify in dir (3 iterations). */
static void ts_setup_run(const char *dir) {
  char cmd[2048], text[2048];
  snprintf(cmd, sizeof cmd, "mkdir -p %s && cp lua/scripts/task_add_digits.lua %s/task.lua && "
           "cp lua/scripts/digit_match.lua %s/reward.lua", dir, dir, dir);
  harness_run(cmd, NULL, 0);
  snprintf(text, sizeof text,
           "name: t\nseed: 3\ndevice: cpu\n"
           "model:\n  init: {arch: qwen3, hidden: 32, layers: 1, heads: 2, kv_heads: 1, head_dim: 16, ffn: 64, max_seq_len: 12}\n"
           "tokenizer: {type: chars, chars: \"0123456789+=\"}\n"
           "data:\n  task: task.lua\n"
           "precision: {rollout: fp8-block, train: bf16}\n"
           "rollout: {batch: 2, samples_per_prompt: 2, max_prompt_tokens: 6, max_new_tokens: 2}\n"
           "reward:\n  script: reward.lua\n"
           "train: {algorithm: grpo, lr: 1.0e-2, microbatch: 4}\n"
           "sync: {verify: true, bucket_mb: 1}\n"
           "loop: {iterations: 3, checkpoint_interval: 1, keep_checkpoints: 2}\n");
  snprintf(cmd, sizeof cmd, "%s/t.yaml", dir);
  harness_write_file(cmd, text);
}

/* Run `rlrun ARGS` in dir with environment env; output into out. */
static int ts_rl(const char *dir, const char *env, const char *args, char *out, size_t n) {
  size_t len = strlen(dir) + strlen(env) + strlen(ts_bin()) + strlen(args) + 32;
  char *cmd = malloc(len);
  snprintf(cmd, len, "cd %s && %s %s %s; exit $?", dir, env, ts_bin(), args);
  int rc = harness_run(cmd, out, n);
  free(cmd);
  return rc;
}

/* The metric `name` of iteration k in the run under dir/runs. */
static double ts_metric(const char *dir, int64_t k, const char *name, int *found) {
  char cmd[1024], rd[1024] = "";
  snprintf(cmd, sizeof cmd, "ls -d %s/runs/*/ | head -1", dir);
  harness_run(cmd, rd, sizeof rd);
  rd[strcspn(rd, "\n")] = 0;
  char db[1200];
  snprintf(db, sizeof db, "%sstate.db", rd);
  rl_err e;
  double v = 0;
  *found = 0;
  store *s = store_open(db, 0, &e);
  if (!s) return 0;
  store_metric_get(s, k, name, &v, found, &e);
  store_close(s);
  return v;
}

TEST(sync_loop_records_metrics_and_verify_stops_on_corruption) {
  char dir[1024], out[8192];
  snprintf(dir, sizeof dir, "%s/ok", harness_tmpdir());
  ts_setup_run(dir);
  int rc = ts_rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out);
  if (rc) fprintf(stderr, "%s\n", out);
  REQUIRE(rc == 0);
  /* hidden 32, ffn 64, 1 layer: q [32,32] k,v [16,32] o [32,32] gate,up [64,32] down [32,64];
   * fp8-block: data rows·cols + one 4-byte scale each */
  int64_t want = (1024 + 4) + 2 * (512 + 4) + (1024 + 4) + 2 * (2048 + 4) + (2048 + 4);
  for (int k = 1; k <= 3; k++) {
    int found = 0;
    double b = ts_metric(dir, k, SYNC_M_BYTES, &found);
    CHECK_MSG(found, "iteration %d: no %s metric", k, SYNC_M_BYTES);
    CHECK_EQ_I64((int64_t)b, want);
    ts_metric(dir, k, SYNC_M_VERIFY_MS, &found);
    CHECK_MSG(found, "iteration %d: verify did not run", k);
    double ms = ts_metric(dir, k, SYNC_M_MS, &found);
    CHECK(found && ms >= 0);
  }
  /* the 2nd re-quantization (iteration 1's sync; the 1st is at start-up) gets a flipped byte */
  snprintf(dir, sizeof dir, "%s/bad", harness_tmpdir());
  ts_setup_run(dir);
  rc = ts_rl(dir, "RLRUN_FAULT=sync.corrupt@2", "run t.yaml --runs-dir runs --quiet", out, sizeof out);
  CHECK_EQ_I64(rc, RL_EXIT_FAIL);
  CHECK_CONTAINS(out, "iteration 1, sync: sync.verify: tensor model.layers.0.self_attn.q_proj.weight (quantized data");
  char rd[1024] = "", cmd[1200], args[1400];
  snprintf(cmd, sizeof cmd, "ls -d %s/runs/*/ | head -1", dir);
  harness_run(cmd, rd, sizeof rd);
  rd[strcspn(rd, "\n")] = 0;
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  rc = ts_rl(dir, "", args, out, sizeof out);
  CHECK_MSG(rc == 0, "resume after the verify failure: rc %d\n%s", rc, out);
  int found = 0;
  ts_metric(dir, 3, SYNC_M_BYTES, &found);
  CHECK(found);
}

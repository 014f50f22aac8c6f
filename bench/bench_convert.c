/* bench_convert.c — peak memory and throughput of `rlrun convert` on a
 * synthetic Qwen3-shaped checkpoint, against two limits measured or stated in
 * the same run: the memory contract (peak RSS ≤ 2 × largest tensor + 64 MiB,
 * measured with /usr/bin/time) and plain file copying of the same input (cp).
 *
 *   build/bench_convert                 0.65 GB checkpoint, 1 layer (what `make bench` runs)
 *   build/bench_convert --gb 2.5        the ≥ 2 GB measurement of issue #6
 *   build/bench_convert --dir /path     where to put the files (default /tmp)
 *   build/bench_convert --device cuda   convert on the GPU (default cpu)
 *   build/bench_convert --keep 1        leave the files (to rerun under /usr/bin/time -v)
 *
 * The rlrun binary is the one next to this program. */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "state/ckpt_dir.h"
#include "state/safetensors.h"

/* Value i of the synthetic weights (deterministic, ~N(0, 0.03)-ish spread). */
static uint16_t synth_bf16(uint64_t i) {
  uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 31;
  return fmt_bf16_from_f32((float)((int64_t)(h % 2001) - 1000) * 3e-5f);
}

/* Write DIR/model.safetensors + config.json: `layers` Qwen3 layers (hidden
 * 4096, FFN 12288, 8 KV heads) and a [32000, 4096] embedding. Returns the
 * largest tensor's bytes and the total. */
static int make_checkpoint(const char *dir, int layers, uint64_t *largest, uint64_t *total) {
  char p[4400];
  snprintf(p, sizeof p, "%s/config.json", dir);
  FILE *f = fopen(p, "w");
  if (!f) return -1;
  fprintf(f, "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", "
             "\"vocab_size\": 32000, \"hidden_size\": 4096, \"intermediate_size\": 12288, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
             "\"head_dim\": 128, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\"}\n", layers);
  fclose(f);
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  st_writer *w = st_writer_new(p);
  rl_err e;
  static const struct {
    const char *name;
    int64_t n, k;
  } L[] = {{"self_attn.q_proj.weight", 4096, 4096}, {"self_attn.k_proj.weight", 1024, 4096},
           {"self_attn.v_proj.weight", 1024, 4096}, {"self_attn.o_proj.weight", 4096, 4096},
           {"mlp.gate_proj.weight", 12288, 4096},   {"mlp.up_proj.weight", 12288, 4096},
           {"mlp.down_proj.weight", 4096, 12288}};
  int64_t emb[2] = {32000, 4096}, norm[1] = {4096}, hnorm[1] = {128};
  /* the declared tensors, written in this order below */
  int n_decl = 0, cap_decl = 4 + layers * 12;
  char(*names)[128] = rl_xcalloc((size_t)cap_decl, sizeof *names);
  int64_t *numel = rl_xcalloc((size_t)cap_decl, sizeof *numel);
#define DECL(nm_, nd_, sh_, n_)                                                \
  do {                                                                         \
    snprintf(names[n_decl], sizeof names[n_decl], "%s", (nm_));                \
    numel[n_decl++] = (n_);                                                    \
    rc = st_writer_add(w, (nm_), ST_BF16, (nd_), (sh_), &e);                   \
  } while (0)
  int rc = 0;
  DECL("model.embed_tokens.weight", 2, emb, emb[0] * emb[1]);
  /* a complete qwen3 checkpoint (convert checks it against config.json): norms too, lm_head tied */
  static const char *const V[] = {"input_layernorm.weight", "post_attention_layernorm.weight",
                                  "self_attn.q_norm.weight", "self_attn.k_norm.weight"};
  for (int l = 0; l < layers && !rc; l++) {
    for (size_t j = 0; j < sizeof L / sizeof *L && !rc; j++) {
      char nm[128];
      int64_t sh[2] = {L[j].n, L[j].k};
      snprintf(nm, sizeof nm, "model.layers.%d.%s", l, L[j].name);
      DECL(nm, 2, sh, L[j].n * L[j].k);
    }
    for (size_t j = 0; j < sizeof V / sizeof *V && !rc; j++) {
      char nm[128];
      snprintf(nm, sizeof nm, "model.layers.%d.%s", l, V[j]);
      DECL(nm, 1, j < 2 ? norm : hnorm, j < 2 ? norm[0] : hnorm[0]);
    }
  }
  if (!rc) DECL("model.norm.weight", 1, norm, norm[0]);
#undef DECL
  if (!rc) rc = st_writer_begin(w, &e);
  *largest = (uint64_t)emb[0] * (uint64_t)emb[1] * 2;
  *total = st_writer_data_bytes(w);
  const size_t CH = 8 << 20;
  uint16_t *buf = rl_xmalloc(CH * 2);
  uint64_t at = 0;
  for (int t = 0; t < n_decl && !rc; t++) { /* every declared tensor, in order */
    const int64_t n = numel[t];
    const int idx = st_writer_find(w, names[t]);
    for (int64_t o = 0; o < n && !rc; o += (int64_t)CH) {
      size_t m = n - o < (int64_t)CH ? (size_t)(n - o) : CH;
      for (size_t i = 0; i < m; i++) buf[i] = synth_bf16(at + i);
      at += m;
      rc = st_writer_write_part(w, idx, (uint64_t)o * 2, buf, m * 2, &e);
    }
  }
  free(names), free(numel);
  free(buf);
  if (rc) {
    fprintf(stderr, "bench_convert: %s\n", e.msg);
    st_writer_abort(w);
    return rc;
  }
  return st_writer_finish(w, &e) ? -1 : 0;
}

/* Run cmd under /usr/bin/time; returns peak RSS in KiB and wall seconds. */
static int timed(const char *cmd, long *kb, double *secs) {
  char full[17000], line[512];
  snprintf(full, sizeof full, "/usr/bin/time -f 'maxrss_kb=%%M' %s 2>&1 >/dev/null | grep maxrss_kb", cmd);
  double t0 = rl_now();
  FILE *p = popen(full, "r");
  if (!p) return -1;
  *kb = 0;
  while (fgets(line, sizeof line, p))
    if (!strncmp(line, "maxrss_kb=", 10)) *kb = atol(line + 10);
  int st = pclose(p);
  *secs = rl_now() - t0;
  return st == 0 && *kb > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  double gb = 0.65;
  const char *base = "/tmp", *device = "cpu";
  int keep = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--gb")) gb = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--dir")) base = argv[i + 1];
    else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
    else if (!strcmp(argv[i], "--keep")) keep = atoi(argv[i + 1]);
  }
  char self[3000], bin[3100], dir[3100], cmd[16384];
  snprintf(self, sizeof self, "%s", argv[0]);
  snprintf(bin, sizeof bin, "%s/rlrun", dirname(self));
  int layers = (int)((gb * 1e9 - 262e6) / 386e6 + 0.5);
  if (layers < 1) layers = 1;
  snprintf(dir, sizeof dir, "%.3000s/rlrun-bench-convert.%ld", base, (long)getpid());
  snprintf(cmd, sizeof cmd, "mkdir -p %s/in", dir);
  if (system(cmd)) return 1;
  char in[3200];
  snprintf(in, sizeof in, "%s/in", dir);
  uint64_t largest, total;
  if (make_checkpoint(in, layers, &largest, &total)) return 1;
  double limit_kb = (2.0 * (double)largest + 64.0 * 1048576.0) / 1024.0;
  printf("synthetic qwen3 checkpoint: %d layers, %.2f GB, largest tensor %.0f MiB; "
         "memory limit 2 x largest + 64 MiB = %.0f MiB\n",
         layers, (double)total / 1e9, (double)largest / 1048576.0, limit_kb / 1024.0);
  printf("%-34s %10s %8s %8s %10s\n", "run", "peak MiB", "/limit", "s", "GB/s in");
  long kb;
  double s;
  snprintf(cmd, sizeof cmd, "cp %s/model.safetensors %s/copy.safetensors", in, dir);
  if (timed(cmd, &kb, &s) == 0)
    printf("%-34s %10.1f %8.2f %8.2f %10.2f\n", "cp (the copy limit)", kb / 1024.0, kb / limit_kb, s,
           (double)total / 1e9 / s);
  const char *runs[][2] = {{"fp8-block", "q8"}, {"mxfp8", "mx"}, {"bf16", "rt"}};
  for (int i = 0; i < 3; i++) {
    const char *src = i == 2 ? "q8" : "in";
    snprintf(cmd, sizeof cmd, "%s convert --in %s/%s --out %s/%s --to %s --quiet --device %s", bin,
             dir, src, dir, runs[i][1], runs[i][0], device);
    char label[64];
    snprintf(label, sizeof label, "convert %s -> %s (%s)", i == 2 ? "fp8-block" : "bf16", runs[i][0], device);
    if (timed(cmd, &kb, &s) || kb < 1) {
      printf("%-34s FAILED (%s)\n", label, cmd);
      continue;
    }
    printf("%-34s %10.1f %8.2f %8.2f %10.2f\n", label, kb / 1024.0, kb / limit_kb, s,
           (double)total / 1e9 / s);
  }
  rl_err e;
  if (keep) printf("files kept in %s\n", dir);
  else ckpt_dir_remove(dir, &e);
  return 0;
}

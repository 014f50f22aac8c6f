/* cmd_score.c — `rlrun score`: per-token log-probs of token sequences under a
 * model, for checking a checkpoint, measuring precision drift, and oracle
 * tests. Input lines {"tokens": [ids…]}; output lines {"logprobs": [...]}
 * with log p(tokens[t+1] | tokens[..t]) for t = 0..n−2, in input order. */
#include <errno.h>
#include <float.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "kernels/common.h"
#include "kernels/device.h"
#include "model/model.h"
#include "model/model_cuda.h"

static const char score_usage[] =
    "usage: rlrun score --model DIR --input IN.jsonl --out OUT.jsonl [options]\n"
    "\n"
    "Per-token log-probs of token sequences: each input line {\"tokens\": [ids...]} gives an\n"
    "output line {\"logprobs\": [...]} holding log p(tokens[t+1] | tokens[..t]) for every t\n"
    "(n-1 values for n tokens), in input order, under softmax(logits / T) (RL.md: the\n"
    "distribution a rollout at temperature T samples from; T = 1 unless --temperature).\n"
    "Ids of a text: `rlrun tokenize --tokenizer DIR/tokenizer.json --ids TEXT` (with --prompt\n"
    "and a RECIPE: as a run's prompt).\n"
    "\n"
    "options:\n"
    "  --model DIR          Hugging Face directory (qwen3 / qwen3_moe; F32, BF16, F16, or an\n"
    "                       fp8-block / mxfp8 / nvfp4 checkpoint, dequantized to BF16 masters)\n"
    "  --input FILE         JSONL input ('-' = stdin)\n"
    "  --out FILE           JSONL output (written under a temporary name, then renamed;\n"
    "                       '-' = stdout; a device or FIFO such as /dev/null is written in place)\n"
    "  --precision P        bf16 (default) | fp8-block | mxfp8 | nvfp4 (MoE experts; rest bf16)\n"
    "                       | fp32 (exact FP32 reference: FP32 weights and products)\n"
    "  --emulate            allow MXFP8/NVFP4 emulation on GPUs without native support\n"
    "                       (the CPU always runs the exact reference)\n"
    "  --exact-logprobs     CUDA: every GEMM through its pinned cuBLASLt algorithm, as a run with\n"
    "                       precision.exact_logprobs computes them (rows independent of the batch;\n"
    "                       the CPU's always are)\n"
    "  --device D           cpu (default) | cuda (the CUDA model; not with --precision fp32)\n"
    "  --batch-tokens N     pack sequences into forwards of up to N tokens (default 4096,\n"
    "                       at most 1048576)\n"
    "  --temperature T      score under softmax(logits / T), T in (0, 10] (default 1): compare\n"
    "                       with the log-probs of a run whose rollout.temperature is T\n"
    "  --entropy            also \"entropy\": [...], the entropy (nats) of the same distribution\n"
    "                       at each of the n-1 positions (what loss/entropy averages)\n"
    "\n"
    "The checkpoint is checked first: every tensor config.json implies present with its shape, as\n"
    "many layers as num_hidden_layers, and no NaN or Inf (named by tensor, row and column); exit 2.\n"
    "A sequence longer than the model's max_position_embeddings is refused (file:line, exit 2).\n"
    "\n"
    "exit codes: 0 ok, 1 I/O failure, 2 bad arguments or input (file:line named; a weight that\n"
    "            is not finite, or values so large the forward overflows),\n"
    "            3 not runnable here (--device cuda without a usable GPU or CUDA build)\n";

/* One input sequence. */
typedef struct score_seq {
  int32_t *tok;
  int n;
} score_seq;

#define SCORE_MAX_BATCH_TOKENS (1 << 20)

/* Parse one input line (len bytes) into s; errors name file and line. A
 * sequence longer than max_pos (the model's max_position_embeddings) is
 * refused before anything runs on it. */
static int score_parse_line(const char *what, long lineno, const char *line, size_t len, int V, int64_t max_pos,
                            score_seq *s, rl_err *e) {
  const char *nul = memchr(line, 0, len);
  if (nul) /* json_loads would stop there and take the line as valid */
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s:%ld:%ld: a NUL byte (0x00) in the line; each line is one JSON object {\"tokens\": [...]} "
                   "and nothing else",
                   what, lineno, (long)(nul - line) + 1);
  json_error_t je;
  json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
  json_t *arr = root ? json_object_get(root, "tokens") : NULL;
  int rc = 0;
  if (!root)
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%ld:%d: not valid JSON: %s", what, lineno, je.column > 0 ? je.column : 1,
                 je.text);
  else if (!json_is_array(arr))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%ld: the line needs a \"tokens\" list of token ids", what, lineno);
  else if ((int64_t)json_array_size(arr) > max_pos)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "%s:%ld: the sequence has %zu tokens, more than the model's max_position_embeddings (%lld in "
                 "config.json); split or truncate it",
                 what, lineno, json_array_size(arr), (long long)max_pos);
  if (!rc) {
    size_t n = json_array_size(arr);
    s->n = (int)n;
    s->tok = rl_xmalloc((n + 1) * sizeof(int32_t));
    for (size_t i = 0; i < n && !rc; i++) {
      json_t *v = json_array_get(arr, i);
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= V)
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "%s:%ld: tokens[%zu] is not a token id in [0, %d) (the model's vocabulary)",
                     what, lineno, i, V);
      else s->tok[i] = (int32_t)json_integer_value(v);
    }
  }
  json_decref(root);
  return rc;
}

/* v[from..to) as JSON numbers (9 significant digits: a float's value), null where not finite */
static void score_values(FILE *out, const float *v, int from, int to) {
  for (int t = from; t < to; t++) {
    if (isfinite(v[t])) fprintf(out, "%s%.9g", t > from ? ", " : "", (double)v[t]);
    else fprintf(out, "%snull", t > from ? ", " : "");
  }
}

/* Score seqs[0..n) in one packed forward and write their lines to out. */
static int score_batch(model *m, int f32, int cuda, float temp, int want_ent, score_seq *seqs, int n, FILE *out,
                       rl_err *e) {
  int T = 0;
  for (int i = 0; i < n; i++) T += seqs[i].n;
  int32_t *tok = rl_xmalloc((size_t)(T + 1) * sizeof(int32_t)), *off = rl_xmalloc((size_t)(n + 1) * sizeof(int32_t));
  int32_t *tg = rl_xmalloc((size_t)(T + 1) * sizeof(int32_t));
  float *lp = rl_xmalloc((size_t)(T + 1) * sizeof(float));
  float *ent = want_ent ? rl_xmalloc((size_t)(T + 1) * sizeof(float)) : NULL;
  off[0] = 0;
  for (int i = 0; i < n; i++) {
    memcpy(tok + off[i], seqs[i].tok, (size_t)seqs[i].n * sizeof(int32_t));
    off[i + 1] = off[i] + seqs[i].n;
  }
  model_batch b = {T, tok, {n, off}};
  model_fwd_opts fo = {.f32 = f32, .no_grad = 1}; /* forward only: one layer's activations on the GPU */
  model_targets_next(tok, &b.seqs, T, tg);
  model_acts *a = cuda ? NULL : model_acts_new();
  model_cuda_acts *ca = cuda ? model_cuda_acts_new() : NULL;
  int rc = cuda ? model_cuda_forward(m, &b, &fo, ca, e) : model_forward(m, &b, &fo, a, e);
  if (!rc) rc = cuda ? model_cuda_logprob_forward(m, ca, tg, temp, lp, ent, e)
                     : model_logprob_forward(a, tg, temp, lp, ent, e);
  for (int i = 0; i < n && !rc; i++) {
    fputs("{\"logprobs\": [", out);
    score_values(out, lp, off[i], off[i + 1] - 1);
    if (ent) {
      fputs("], \"entropy\": [", out);
      score_values(out, ent, off[i], off[i + 1] - 1);
    }
    fputs("]}\n", out);
  }
  model_acts_free(a);
  model_cuda_acts_free(ca);
  free(tok), free(off), free(tg), free(lp), free(ent);
  return rc;
}

/* A forward that went non-finite on finite weights (model_check_finite ran
 * first): the model's values overflow. The layers below advise as for
 * training ("lower the learning rate"); here the checkpoint is the input. */
static void score_overflow_advice(rl_err *e) {
  const char *train = "(lower the learning rate or check the weights)";
  char *p = strstr(e->msg, train);
  if (!p) return;
  snprintf(p, sizeof e->msg - (size_t)(p - e->msg),
           "(every weight is finite, but the activations overflow: the checkpoint's values are too large)");
  e->code = RL_EXIT_USAGE;
}

/* The quant policy of a --precision name; 0 or an error. */
static int score_policy(const char *p, const model_config *c, quant_policy *q, int *f32, rl_err *e) {
  *f32 = 0;
  if (!strcmp(p, "bf16")) quant_policy_init(q, QFMT_BF16, QFMT_BF16);
  else if (!strcmp(p, "fp8-block")) quant_policy_init(q, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  else if (!strcmp(p, "mxfp8")) quant_policy_init(q, QFMT_MXFP8, QFMT_MXFP8);
  else if (!strcmp(p, "nvfp4")) {
    if (c->kind != MODEL_KIND_QWEN3_MOE)
      return rl_errf(e, RL_EXIT_USAGE,
                     "--precision nvfp4 applies to MoE experts only, and this model is dense "
                     "(qwen3); use bf16, fp8-block or mxfp8");
    quant_policy_init(q, QFMT_BF16, QFMT_NVFP4);
  } else if (!strcmp(p, "fp32")) {
    quant_policy_init(q, QFMT_BF16, QFMT_BF16);
    *f32 = 1;
  } else
    return rl_errf(e, RL_EXIT_USAGE,
                   "--precision '%s' is unknown; use bf16, fp8-block, mxfp8, nvfp4 or fp32", p);
  return 0;
}

/* Line lineno of the input as read (len bytes): its text without the end of
 * line (and the first line's UTF-8 BOM), or NULL when blank (empty or
 * whitespace only: skipped). */
static char *score_line_text(char *line, ssize_t *len, long lineno) {
  while (*len > 0 && (line[*len - 1] == '\n' || line[*len - 1] == '\r')) line[--*len] = 0;
  char *text = line;
  if (lineno == 1 && *len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) text += 3, *len -= 3; /* a UTF-8 BOM */
  ssize_t sp = 0;
  while (sp < *len && (text[sp] == ' ' || text[sp] == '\t' || text[sp] == '\r')) sp++;
  return sp == *len ? NULL : text;
}

/* Every line of a regular --input file parsed before the model loads, so that
 * a bad line (FILE:LINE named) costs neither the load nor the scoring of the
 * lines before it; stdin and FIFOs are read once, as they come. */
static int score_check_input(const char *in, int V, int64_t max_pos, rl_err *e) {
  FILE *f = fopen(in, "r");
  if (!f) return rl_errf(e, RL_EXIT_USAGE, "cannot open --input %s: %s", in, strerror(errno));
  char *line = NULL;
  size_t cap = 0;
  long lineno = 0;
  int rc = 0;
  for (ssize_t len; !rc && !rl_interrupted() && (len = getline(&line, &cap, f)) >= 0;) {
    char *text = score_line_text(line, &len, ++lineno);
    score_seq sq = {0};
    if (text) rc = score_parse_line(in, lineno, text, (size_t)len, V, max_pos, &sq, e);
    free(sq.tok);
  }
  if (!rc && ferror(f) && !rl_interrupted())
    rc = rl_errf(e, RL_EXIT_FAIL, "reading --input %s failed after line %ld: %s", in, lineno, strerror(errno));
  free(line);
  fclose(f);
  return rc;
}

/* Parse arguments, load, score every line; returns the exit code. */
static int score_run(int argc, char **argv, rl_err *e) {
  const char *dir = NULL, *in = NULL, *outp = NULL, *prec = "bf16", *dev = "cpu";
  int emulate = 0, exact = 0, want_ent = 0;
  long batch_tokens = 4096;
  float temp = 1.0f;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = !strcmp(a, "--model") ? &dir : !strcmp(a, "--input") ? &in
                     : !strcmp(a, "--out") ? &outp : !strcmp(a, "--precision") ? &prec
                     : !strcmp(a, "--device") ? &dev : NULL;
    if (!strcmp(a, "--emulate")) emulate = 1;
    else if (!strcmp(a, "--exact-logprobs")) exact = 1;
    else if (!strcmp(a, "--entropy")) want_ent = 1;
    else if (!strcmp(a, "--temperature") && i + 1 < argc) {
      const char *v = argv[++i];
      char *end;
      errno = 0;
      double t = strtod(v, &end);
      /* rollout.temperature's range, (0, 10], as FP32 computes it (a normal number) */
      if (end == v || *end || errno || !(t >= FLT_MIN) || t > 10)
        return rl_errf(e, RL_EXIT_USAGE,
                       "--temperature '%s' is not a number in (0, 10] and at least 1.2e-38, FP32's smallest normal "
                       "number (a run's rollout.temperature; default 1)", v);
      temp = (float)t;
    } else if (!strcmp(a, "--batch-tokens") && i + 1 < argc) {
      const char *v = argv[++i];
      char *end;
      errno = 0;
      long long bt = strtoll(v, &end, 10);
      if (*v < '0' || *v > '9' || *end || errno || bt < 1 || bt > SCORE_MAX_BATCH_TOKENS) /* no sign, no blank */
        return rl_errf(e, RL_EXIT_USAGE,
                       "--batch-tokens '%s' is not an integer in [1, %d] (tokens per forward; default 4096)", v,
                       SCORE_MAX_BATCH_TOKENS);
      batch_tokens = (long)bt;
    } else if (dst && i + 1 < argc) *dst = argv[++i];
    else
      return rl_errf(e, RL_EXIT_USAGE, "%s '%s'; see `rlrun score --help`",
                     dst || !strcmp(a, "--batch-tokens") || !strcmp(a, "--temperature") ? "missing value for"
                                                                                         : "unknown argument",
                     a);
  }
  if (!dir || !in || !outp)
    return rl_errf(e, RL_EXIT_USAGE, "--model, --input and --out are required; see `rlrun score --help`");
  if (strcmp(dev, "cpu") && strcmp(dev, "cuda"))
    return rl_errf(e, RL_EXIT_USAGE, "--device '%s' is unknown; use cpu or cuda", dev);
  int cuda = !strcmp(dev, "cuda");
  if (cuda && !strcmp(prec, "fp32")) /* bad arguments first, whatever the machine */
    return rl_errf(e, RL_EXIT_USAGE, "--precision fp32 runs on the CPU only; use --device cpu or another precision");
  if (cuda) { /* before the model is read: a build or a machine without a GPU says so once */
    device_info d;
    device_query(&d);
    if (!d.built_with_cuda || d.n_gpus == 0)
      return rl_errf(e, RL_EXIT_HARDWARE, "--device cuda: no usable GPU (%s); use --device cpu", d.status);
  }
  /* the files first: a typo in a path costs no model load */
  if (strcmp(in, "-")) {
    struct stat st;
    if (stat(in, &st) != 0) return rl_errf(e, RL_EXIT_USAGE, "cannot open --input %s: %s", in, strerror(errno));
    if (S_ISDIR(st.st_mode)) /* fopen takes a directory, and getline reads it as empty */
      return rl_errf(e, RL_EXIT_USAGE, "--input %s is a directory: give a JSONL file ('-' reads stdin)", in);
  }
  if (rl_check_out_file("--out", outp, e)) return RL_EXIT_USAGE;
  if (strcmp(in, "-") && strcmp(outp, "-")) { /* the scores renamed over the sequences they came from */
    struct stat si, so;
    if (stat(in, &si) == 0 && stat(outp, &so) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino &&
        S_ISREG(so.st_mode))
      return rl_errf(e, RL_EXIT_USAGE, "--out %s is the --input file: the log-probs would replace the sequences; "
                     "give another --out", outp);
  }
  model_config cfg;
  int rc = model_config_load_hf(dir, &cfg, e), f32 = 0;
  if (rc) return rc;
  quant_policy pol;
  rc = score_policy(prec, &cfg, &pol, &f32, e);
  struct stat ist;
  if (!rc && strcmp(in, "-") && stat(in, &ist) == 0 && S_ISREG(ist.st_mode))
    rc = score_check_input(in, (int)cfg.vocab_size, cfg.max_position_embeddings, e);
  model_config_free(&cfg);
  if (rc) return rc;
  pol.emulate = emulate, pol.pin_algo = exact;
  model *m = NULL;
  model_load_opts lo = {f32};
  if ((rc = model_load(dir, &lo, &m, e))) return rc;
  /* a NaN or Inf weight is a damaged checkpoint: say which tensor (the forward
   * would only see non-finite logits much later) */
  if ((rc = model_check_finite(m, e))) {
    rl_err_prefix(e, "--model %s: ", dir);
    model_free(m);
    return rc;
  }
  if (cuda && (rc = model_cuda_init(m, e))) { /* the GPU failed: say so, and what to do */
    char why[sizeof e->msg];
    snprintf(why, sizeof why, "%s", e->msg);
    /* the layers below advise the recipe key ("use device: cpu"); here it is the option */
    size_t wl = strlen(why), al = strlen("; use device: cpu");
    if (wl >= al && !strcmp(why + wl - al, "; use device: cpu")) why[wl - al] = 0;
    rc = rl_errf(e, rc, "--device cuda: %s; use --device cpu", why);
  }
  if (cuda && !rc) rc = model_cuda_quantize(m, &pol, e);
  if (rc) {
    model_free(m);
    return rc;
  }
  if (!f32 && !cuda && (rc = model_quantize(m, &pol, e))) {
    model_free(m);
    return rc;
  }
  FILE *fin = !strcmp(in, "-") ? stdin : fopen(in, "r");
  if (!fin) {
    model_free(m);
    return rl_errf(e, RL_EXIT_USAGE, "cannot open --input %s: %s", in, strerror(errno));
  }
  /* written to OUT.tmp and renamed over OUT when complete; "-" is stdout, and an
   * OUT that is a device or a FIFO (/dev/null) is written in place */
  const int to_stdout = !strcmp(outp, "-"), direct = to_stdout || rl_path_is_special(outp);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s", outp);
  FILE *fout = to_stdout ? stdout : direct ? fopen(tmp, "w") : NULL;
  /* the temporary is a new file (O_EXCL), never an existing one truncated: a
   * fixed OUT.tmp was the --input itself when named so (it was emptied, and
   * 0 sequences scored), or another run's temporary */
  for (int k = 0; !direct && !fout && k < 100; k++) {
    snprintf(tmp, sizeof tmp, k ? "%s.tmp.%ld.%d" : "%s.tmp.%ld", outp, (long)getpid(), k);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 && !(fout = fdopen(fd, "w"))) close(fd), remove(tmp);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (!fout) rc = rl_errf(e, RL_EXIT_FAIL, "cannot write %s: %s", tmp, strerror(errno));
  score_seq *seqs = NULL;
  int n = 0, cap = 0;
  long lineno = 0, n_seq = 0, n_tok = 0, pending = 0;
  char *line = NULL;
  size_t lcap = 0;
  double t0 = rl_now();
  while (!rc) {
    ssize_t len = rl_interrupted() ? -1 : getline(&line, &lcap, fin);
    if (rl_interrupted()) { /* between lines and batches, or a read the signal cut short; the temporary goes below */
      rc = direct ? rl_errf(e, RL_EXIT_INTERRUPT, "interrupted after input line %ld (the scores of the batches "
                                                  "finished before it are written)", lineno)
                  : rl_errf(e, RL_EXIT_INTERRUPT, "interrupted after input line %ld: %s is not written", lineno, outp);
      break;
    }
    int eof = len < 0;
    if (!eof) {
      char *text = score_line_text(line, &len, ++lineno);
      if (!text) continue; /* blank */
      if (n == cap) seqs = rl_xrealloc(seqs, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *seqs);
      seqs[n] = (score_seq){0};
      if ((rc = score_parse_line(in, lineno, text, (size_t)len, m->V, m->cfg.max_position_embeddings, &seqs[n], e))) {
        free(seqs[n].tok);
        break;
      }
      pending += seqs[n].n, n_tok += seqs[n].n, n++, n_seq++;
    }
    if (n && (eof || pending >= batch_tokens)) {
      rc = score_batch(m, f32, cuda, temp, want_ent, seqs, n, fout, e);
      if (rc) {
        score_overflow_advice(e);
        rc = e->code;
      }
      for (int i = 0; i < n; i++) free(seqs[i].tok);
      n = 0, pending = 0;
    }
    if (eof) break;
  }
  for (int i = 0; i < n; i++) free(seqs[i].tok);
  free(seqs), free(line);
  if (!rc && ferror(fin)) /* getline's -1 was a read error, not the end */
    rc = rl_errf(e, RL_EXIT_FAIL, "reading --input %s failed after line %ld: %s", in, lineno, strerror(errno));
  if (fin != stdin) fclose(fin);
  if (fout && (to_stdout ? fflush(fout) : fclose(fout)) && !rc)
    rc = rl_errf(e, RL_EXIT_FAIL, "writing %s failed", to_stdout ? "stdout" : tmp);
  if (!rc && !direct && rename(tmp, outp))
    rc = rl_errf(e, RL_EXIT_FAIL, "cannot rename %s to %s: %s", tmp, outp, strerror(errno));
  if (rc && fout && !direct) remove(tmp);
  double dt = rl_now() - t0;
  if (!rc)
    fprintf(stderr, "score: %ld sequence%s, %ld token%s, precision %s, device %s: %.2f s (%.0f tokens/s)\n",
            n_seq, n_seq == 1 ? "" : "s", n_tok, n_tok == 1 ? "" : "s", prec, dev, dt, dt > 0 ? n_tok / dt : 0.0);
  model_free(m);
  return rc;
}

int cmd_score(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    fputs(score_usage, stdout);
    return RL_EXIT_OK;
  }
  rl_err e = {0};
  rl_interrupt_install("rlrun score: interrupt: stopping; a partial output is removed (interrupt again to stop "
                       "now)",
                       "rlrun: second interrupt: stopping now (a temporary may be left beside the output)");
  int rc = score_run(argc, argv, &e);
  if (rc) fprintf(stderr, "rlrun score: %s\n", e.msg);
  return rc;
}

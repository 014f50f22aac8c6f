/* recipe_check.c — rules that involve more than one key: the model source,
 * tokenizer, data, referenced files, the precision matrix, GPU placement; and
 * the hardware check (can this valid recipe run on a given machine?). */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lua/host.h"
#include "model/config.h"
#include "model/model.h"
#include "runner/inputs.h"
#include "runner/recipe_tree.h"
#include "runner/runs.h"
#include "state/ckpt.h"
#include "state/sha256.h"
#include "stages/prompts.h"
#include "stages/sync.h"
#include "stages/train.h"
#include "stages/tokenizer.h"
#include "stages/unicode.h"

/* Error about key `path`, at the place it was written (or the recipe file). */
static int kerr(recipe *r, rl_err *e, const char *path, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int kerr(recipe *r, rl_err *e, const char *path, const char *fmt, ...) {
  char msg[1400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  recipe_loc l = recipe_key_loc(r, path);
  if (recipe_loc_names_key(&l, path)) return recipe_errf(e, &l, "%s", msg);
  return recipe_errf(e, &l, "%s: %s", path, msg);
}

static int is_set(const recipe *r, const char *path) {
  int i = recipe_key_index(path);
  return i >= 0 && r->key_set[i];
}

/* 1 when file is a run's stored recipe (RUNDIR/recipe.resolved.yaml: resume,
 * or validated as a recipe), which writes every key out. */
static int is_run_recipe(const char *file) {
  const size_t fl = file ? strlen(file) : 0, rl = strlen("/" RUNS_RESOLVED);
  return fl > rl && !strcmp(file + fl - rl, "/" RUNS_RESOLVED);
}

/* Where a relative path of key came from: a --set value is taken as given
 * (from the current directory), a recipe's from the file that writes it. */
static const char *path_hint(const recipe *r, const char *key, char *buf, size_t n) {
  recipe_loc l = recipe_key_loc(r, key);
  if (l.line == 0 && !strncmp(l.file, "--set ", 6)) snprintf(buf, n, "a --set path is relative to the current directory");
  else if (is_run_recipe(l.file)) /* a run's stored recipe (resume) */
    snprintf(buf, n, "the run's recipe names it there; moved elsewhere: rlrun resume RUNDIR --set %s=NEW_PATH", key);
  else snprintf(buf, n, "a path in a recipe is relative to the directory of the file that writes it");
  return buf;
}

/* 0 if path exists as a directory (want_dir) or regular file; else errno-ish text. */
static const char *check_path(const char *path, int want_dir) {
  struct stat st;
  if (stat(path, &st) != 0) return strerror(errno);
  if (want_dir && !S_ISDIR(st.st_mode)) return "not a directory";
  if (!want_dir && S_ISDIR(st.st_mode)) return "a directory, expected a file";
  if (!want_dir && !S_ISREG(st.st_mode)) {
    static _Thread_local char why[96];
    snprintf(why, sizeof why, "not a regular file (%s), expected a file", rl_file_kind(st.st_mode));
    return why;
  }
  return NULL;
}

/* Read model_type and num_hidden_layers from DIR/config.json. */
static int read_config(recipe *r, const char *key, const char *dir, int required, rl_err *e) {
  char cfg[4200];
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  struct stat st;
  if (stat(cfg, &st) != 0) {
    if (!required) return 0;
    return kerr(r, e, key, "'%s' has no config.json: expected a Hugging Face model directory", dir);
  }
  json_error_t je;
  json_t *j = json_load_file(cfg, 0, &je);
  if (!j || !json_is_object(j)) {
    json_decref(j);
    return kerr(r, e, key, "%s:%d:%d: not a JSON object: %s", cfg, je.line, je.column, je.text);
  }
  const char *mt = json_string_value(json_object_get(j, "model_type"));
  json_int_t layers = json_integer_value(json_object_get(j, "num_hidden_layers"));
  int rc = 0;
  if (!mt || (strcmp(mt, "qwen3") && strcmp(mt, "qwen3_moe")))
    rc = kerr(r, e, key, "%s: model_type '%s' is not supported (qwen3, qwen3_moe)", cfg, mt ? mt : "(missing)");
  else
    r->model.is_moe = !strcmp(mt, "qwen3_moe");
  if (layers > 0) r->model.layers = layers;
  json_decref(j);
  if (rc) return rc;
  /* the whole config, as the run reads it: a config.json without vocab_size (or with a
   * head count that does not divide) passed here and stopped the run it had created */
  model_config c;
  rl_err ce;
  if (model_config_load(cfg, &c, &ce)) return kerr(r, e, key, "%s", ce.msg);
  r->model.positions = c.max_position_embeddings;
  r->model.vocab = c.vocab_size;
  snprintf(r->model.quant_method, sizeof r->model.quant_method, "%s", c.quant_method);
  model_config_free(&c);
  if (r->train.algorithm != ALGO_SFT && c.max_position_embeddings < r->rollout.max_prompt_tokens + r->rollout.max_new_tokens)
    rc = kerr(r, e, is_set(r, "rollout.max_new_tokens") ? "rollout.max_new_tokens" : key,
              "prompt + completion (%lld + %lld tokens) exceed the model's max_position_embeddings (%lld, %s): "
              "lower rollout.max_prompt_tokens or rollout.max_new_tokens",
              (long long)r->rollout.max_prompt_tokens, (long long)r->rollout.max_new_tokens,
              (long long)c.max_position_embeddings, cfg);
  return rc;
}

/* For "a and b are mutually exclusive": where each was set when they come
 * from different files, and when one of them is inherited through base: (set
 * in neither the recipe itself nor a --set), that `leaf: null` in the recipe
 * removes it; "" when both are in one file (the message's FILE:LINE says it). */
static const char *exclusive_where(const recipe *r, const char *a, const char *b, char *buf, size_t n) {
  recipe_loc la = recipe_key_loc(r, a), lb = recipe_key_loc(r, b);
  buf[0] = 0;
  if (!la.file || !lb.file || !strcmp(la.file, lb.file)) return buf;
  int ia = r->file && strcmp(la.file, r->file) && strncmp(la.file, "--set ", 6);
  int ib = r->file && strcmp(lb.file, r->file) && strncmp(lb.file, "--set ", 6);
  const char *inh = ia == ib ? NULL : ia ? a : b;
  char how[200] = "", wa[400], wb[400];
  if (inh) snprintf(how, sizeof how, "; `%s: null` in %s removes the inherited one", strrchr(inh, '.') + 1, r->file);
  snprintf(buf, n, " (%s is set at %s, %s at %s%s)", a, recipe_loc_str(&la, wa, sizeof wa), b,
           recipe_loc_str(&lb, wb, sizeof wb), how);
  return buf;
}

static int check_model(recipe *r, int flags, rl_err *e) {
  int rc = 0, n = !!r->model.path + !!r->model.checkpoint + r->model.has_init;
  r->model.is_moe = -1;
  if (n == 0)
    return kerr(r, e, "model", "missing: set one of model.path (a Hugging Face model directory), "
                "model.checkpoint (a run's checkpoint) or model.init (a fresh small model)");
  if (n > 1) {
    const char *second = r->model.has_init ? "model.init" : "model.checkpoint";
    const char *first = r->model.path ? "model.path" : "model.checkpoint";
    char where[1200];
    return kerr(r, e, second, "model.path, model.checkpoint and model.init are mutually exclusive: keep one%s",
                n == 2 ? exclusive_where(r, first, second, where, sizeof where) : "");
  }
  if (r->model.has_init) {
    __typeof__(r->model.init) *m = &r->model.init;
    r->model.is_moe = m->arch == ARCH_QWEN3_MOE;
    r->model.layers = m->layers;
    if (m->heads % m->kv_heads)
      rc = kerr(r, e, "model.init.kv_heads", "%lld does not divide heads (%lld)", (long long)m->kv_heads,
                (long long)m->heads);
    if (m->head_dim % 2) rc = kerr(r, e, "model.init.head_dim", "%lld is odd: RoPE needs an even head_dim", (long long)m->head_dim);
    static const char *const moe_only[] = {"model.init.experts", "model.init.top_k", "model.init.moe_ffn",
                                           "model.init.norm_topk_prob", NULL};
    for (int i = 0; m->arch == ARCH_QWEN3 && moe_only[i]; i++)
      if (is_set(r, moe_only[i])) rc = kerr(r, e, moe_only[i], "applies only to arch: qwen3_moe (this model is qwen3, dense)");
    if (m->arch == ARCH_QWEN3_MOE && m->top_k > m->experts)
      rc = kerr(r, e, "model.init.top_k", "%lld is more than experts (%lld)", (long long)m->top_k, (long long)m->experts);
    /* sft samples nothing: its examples are checked against max_seq_len one by one (data_limits), as with model.path */
    if (r->train.algorithm != ALGO_SFT && m->max_seq_len < r->rollout.max_prompt_tokens + r->rollout.max_new_tokens)
      rc = kerr(r, e, is_set(r, "rollout.max_new_tokens") ? "rollout.max_new_tokens" : "model.init.max_seq_len",
                "prompt + completion (%lld + %lld tokens) exceed model.init.max_seq_len (%lld)",
                (long long)r->rollout.max_prompt_tokens, (long long)r->rollout.max_new_tokens, (long long)m->max_seq_len);
    return rc;
  }
  if (flags & RECIPE_NO_FS) return 0;
  if (r->model.checkpoint) {
    char *res = recipe_resolve_checkpoint(r->model.checkpoint);
    struct stat st;
    if (!res && stat(r->model.checkpoint, &st) == 0)
      return kerr(r, e, "model.checkpoint", "'%s' is neither a checkpoint directory (config.json) nor a run "
                  "directory with a checkpoint", r->model.checkpoint);
    if (!res) { /* the output of a run still to come (an SFT warm start): valid, not runnable yet */
      recipe_warn(r, "note: model.checkpoint '%s' holds no checkpoint yet: run the recipe that writes it first "
                  "(rlrun run refuses this recipe until then)", r->model.checkpoint);
      return 0;
    }
    /* named by its run (or RUNS/NAME): say when that run is not complete, since its newest checkpoint is
     * what this recipe starts from (an SFT warm start stopped half-way, or still running) */
    const char *cut = strstr(res, "/" CKPT_SUBDIR "/step-");
    if (cut && strcmp(res, r->model.checkpoint)) {
      char run[4200];
      int64_t iters = 0;
      snprintf(run, sizeof run, "%.*s", (int)(cut - res), res);
      if (runs_is_complete(run, &iters) == 0)
        recipe_warn(r, "note: model.checkpoint '%s': the run %s is not complete (%s, %lld iterations planned): "
                    "this recipe starts from its newest checkpoint, %s", r->model.checkpoint, run,
                    runs_is_locked(run) ? "still running" : "stopped", (long long)iters, cut + strlen(CKPT_SUBDIR) + 2);
    }
    free(r->model.checkpoint);
    r->model.checkpoint = res;
    /* a checkpoint directory named directly counts by its config.json: without
     * its weights the loader would read whatever *.safetensors is left (the
     * optimizer's) and fail mid-run, after the run directory exists */
    char w[4400];
    if (snprintf(w, sizeof w, "%s/" CKPT_WEIGHTS, res) < (int)sizeof w && stat(w, &st) != 0)
      return kerr(r, e, "model.checkpoint", "'%s' is an incomplete checkpoint directory: no " CKPT_WEIGHTS
                  " beside its config.json", res);
  }
  const char *key = r->model.path ? "model.path" : "model.checkpoint";
  const char *dir = r->model.path ? r->model.path : r->model.checkpoint;
  const char *why = check_path(dir, 1);
  char hint[160];
  if (why) return kerr(r, e, key, "'%s': %s (%s)", dir, why, path_hint(r, key, hint, sizeof hint));
  return read_config(r, key, dir, r->model.path != NULL, e);
}

static int check_tokenizer(recipe *r, int flags, tokenizer **keep, rl_err *e) {
  int rc = 0;
  if (r->tokenizer.type == TOKENIZER_CHARS) {
    if (r->tokenizer.path) rc = kerr(r, e, "tokenizer.path", "applies to tokenizer.type: hf (this tokenizer is chars)");
    if (r->tokenizer.bos) rc = kerr(r, e, "tokenizer.bos", "applies to tokenizer.type: hf (chars has <bos>, id 1)");
    if (r->tokenizer.eos) rc = kerr(r, e, "tokenizer.eos", "applies to tokenizer.type: hf (chars has <eos>, id 2)");
    if (!r->tokenizer.chars)
      return kerr(r, e, "tokenizer.type", "chars needs tokenizer.chars: the characters of the vocabulary");
    /* each character once */
    const char *s = r->tokenizer.chars;
    size_t n = strlen(s), i = 0;
    int count = 0;
    while (i < n) {
      size_t at = i, j = 0;
      uint32_t cp, cq;
      if (uni_utf8_next(s, n, &i, &cp)) /* the loader checked the recipe's text: not met */
        return kerr(r, e, "tokenizer.chars", "is not UTF-8 at byte %zu", at);
      while (j < at && !uni_utf8_next(s, n, &j, &cq))
        if (cq == cp) {
          char shown[8] = {0};
          if (cp < 0x20) snprintf(shown, sizeof shown, "\\x%02x", (unsigned)cp);
          else memcpy(shown, s + at, i - at);
          return kerr(r, e, "tokenizer.chars", "character '%s' appears twice: list each character once", shown);
        }
      count++;
    }
    /* The character tokenizer puts <pad>, <bos>, <eos> first (stages/tokenizer.h). */
    if (r->model.has_init && r->model.init.vocab && r->model.init.vocab < count + 3)
      rc = kerr(r, e, "model.init.vocab",
                "%lld is smaller than the %d ids the tokenizer needs (<pad>, <bos>, <eos> and the %d "
                "characters of tokenizer.chars)",
                (long long)r->model.init.vocab, count + 3, count);
    if (!r->model.has_init && r->model.vocab && r->model.vocab < count + 3) /* the run refused it, after its start */
      rc = kerr(r, e, "tokenizer.chars",
                "the tokenizer needs %d ids (<pad>, <bos>, <eos> and %d characters), more than the model's "
                "vocabulary (vocab_size %lld in %s's config.json)", count + 3, count, (long long)r->model.vocab,
                r->model.path ? "model.path" : "model.checkpoint");
    /* a run's checkpoint records the tokenizer it was trained with (manifest
     * "extra"): the same vocabulary size with other characters (reordered,
     * swapped) would feed the weights other token ids silently */
    json_t *t = !rc && !(flags & RECIPE_NO_FS) ? recipe_checkpoint_tokenizer(r) : NULL;
    if (t) {
      const char *ty = json_string_value(json_object_get(t, "type")), *ch = json_string_value(json_object_get(t, "chars"));
      if (ty && strcmp(ty, "chars"))
        rc = kerr(r, e, "tokenizer.type", "model.checkpoint '%s' was trained with a tokenizer of type %s (its "
                  "manifest.json): use that tokenizer", r->model.checkpoint, ty);
      else if (ch && strcmp(ch, r->tokenizer.chars))
        rc = kerr(r, e, "tokenizer.chars", "differs from the characters model.checkpoint '%s' was trained with "
                  "(\"%s\", its manifest.json): its token ids would stand for other characters; use those "
                  "tokenizer.chars", r->model.checkpoint, ch);
      json_decref(t);
    }
    return rc;
  }
  /* hf: the tokenizer.json is read here as the run will read it, so a file it
   * cannot use is refused before a run directory exists */
  if (r->tokenizer.chars) rc = kerr(r, e, "tokenizer.chars", "applies to tokenizer.type: chars (this tokenizer is hf)");
  if (!r->tokenizer.path && !r->model.path && r->model.has_init)
    return kerr(r, e, is_set(r, "tokenizer.type") ? "tokenizer.type" : "model.init",
                "a fresh model needs a tokenizer: set tokenizer.path to a tokenizer.json (type hf, the default), or "
                "tokenizer.type: chars with tokenizer.chars");
  if (flags & RECIPE_NO_FS) return rc;
  const char *key;
  char *path = recipe_tokenizer_path(r, &key);
  struct stat st;
  if (!path && r->model.checkpoint && stat(r->model.checkpoint, &st) != 0)
    return rc; /* a checkpoint still to come (check_model noted it): its tokenizer is checked when it exists */
  if (!path && !r->model.checkpoint) return rc; /* no model source: check_model said so */
  if (!path) { /* a checkpoint that records none: a chars run's (named), or one from before hf */
    json_t *x = recipe_checkpoint_tokenizer(r);
    const char *ty = json_string_value(json_object_get(x, "type"));
    const char *ch = json_string_value(json_object_get(x, "chars"));
    char *quoted = ch ? json_dumps(json_object_get(x, "chars"), JSON_ENCODE_ANY) : NULL;
    if (ty && !strcmp(ty, "chars"))
      rc = kerr(r, e, is_set(r, "tokenizer.type") ? "tokenizer.type" : "model.checkpoint",
                "model.checkpoint '%s' was trained with tokenizer.type chars (its manifest.json): set tokenizer.type: "
                "chars with the same tokenizer.chars%s%s", r->model.checkpoint, quoted ? ": " : "", quoted ? quoted : "");
    else
      rc = kerr(r, e, "model.checkpoint", "records no tokenizer.json it was trained with: set tokenizer.path to it");
    free(quoted);
    json_decref(x);
    return rc;
  }
  const char *why = check_path(path, 0);
  struct stat mst;
  if (why && !strcmp(key, "model.path") && stat(r->model.path, &mst) != 0) { /* the directory's error was said */
    free(path);
    return rc;
  }
  if (why) {
    rc = kerr(r, e, key, "%s: %s: %s", path, why,
              !strcmp(key, "model.path") ? "the model directory holds no tokenizer.json; set tokenizer.path to the "
                                           "model's tokenizer.json, or tokenizer.type: chars with tokenizer.chars"
                                         : "set tokenizer.path to the tokenizer.json to use");
    free(path);
    return rc;
  }
  tokenizer *tok = NULL;
  rl_err te;
  if (tokenizer_hf_new(path, &tok, &te)) {
    rc = kerr(r, e, key, "%s", te.msg);
    free(path);
    return rc;
  }
  const int64_t V = tokenizer_vocab_size(tok);
  const char *blame;
  if (recipe_tokenizer_specials(r, tok, path, &blame, &te)) {
    rc = kerr(r, e, blame ? blame : key, "%s", te.msg);
    tokenizer_free(tok);
  } else *keep = tok; /* the run's tokenizer (its BOS / EOS the recipe's): the later checks use it */
  if (r->model.has_init && r->model.init.vocab && r->model.init.vocab < V)
    rc = kerr(r, e, "model.init.vocab", "%lld is smaller than the %lld ids of the tokenizer (%s)",
              (long long)r->model.init.vocab, (long long)V, path);
  if (!r->model.has_init && r->model.vocab && r->model.vocab < V)
    rc = kerr(r, e, key, "the tokenizer %s has %lld ids, more than the model's vocabulary (vocab_size %lld in "
              "%s's config.json): use the model's own tokenizer.json", path, (long long)V, (long long)r->model.vocab,
              r->model.path ? "model.path" : "model.checkpoint");
  /* the checkpoint's record (manifest "extra"): another tokenizer.json would
   * feed its weights other token ids */
  json_t *t = rc ? NULL : recipe_checkpoint_tokenizer(r);
  if (t) {
    const char *ty = json_string_value(json_object_get(t, "type")), *sha = json_string_value(json_object_get(t, "sha256"));
    char hex[65];
    rl_err ce;
    if (ty && strcmp(ty, "hf"))
      rc = kerr(r, e, "tokenizer.type", "model.checkpoint '%s' was trained with a tokenizer of type %s (its "
                "manifest.json): use that tokenizer", r->model.checkpoint, ty);
    else if (sha && sha256_file(path, hex, NULL, &ce) == 0 && strcmp(hex, sha))
      rc = kerr(r, e, key, "%s differs from the tokenizer.json model.checkpoint '%s' was trained with (%s, sha256 "
                "%.12s…, its manifest.json; this one %.12s…): its token ids would stand for other text; use that one",
                path, r->model.checkpoint, json_string_value(json_object_get(t, "path")) ? json_string_value(json_object_get(t, "path")) : "?",
                sha, hex);
    json_decref(t);
  }
  free(path);
  return rc;
}

/* rollout.stop_tokens: each the exact text of a token of the recipe's tokenizer
 * (with the tokenizer already checked: the hf one check_tokenizer loaded, else
 * made here), and what to warn of about ends. */
static int check_stop_tokens(recipe *r, int flags, tokenizer *hf, rl_err *e) {
  if ((flags & RECIPE_NO_FS) && r->tokenizer.type == TOKENIZER_HF) return 0;
  tokenizer *own = NULL, *tok = hf;
  rl_err te;
  if (!tok && recipe_tokenizer(r, &own, &te)) return 0; /* check_tokenizer's error */
  if (!tok) tok = own;
  int rc = 0;
  char shown[4 * RECIPE_CLIP + 8];
  /* rollout.stop_tokens and the generation config's eos ids, as the run reads them */
  int32_t *ends = NULL;
  int n_ends = 0;
  const char *blame;
  if (recipe_end_ids(r, tok, &ends, &n_ends, NULL, &blame, &te)) rc = kerr(r, e, blame, "%s", te.msg);
  free(ends);
  /* an hf tokenizer without an EOS: nothing ends a completion but stop strings and the length (sft: its
   * targets get no end token, whatever ends a sampled completion) */
  if (!rc && tok->eos < 0 && r->train.algorithm == ALGO_SFT)
    recipe_warn(r, "warning: the tokenizer has no EOS (no tokenizer_config.json beside its tokenizer.json names an "
                "eos_token): sft targets get no end token, so the model is not taught to stop; set tokenizer.eos");
  else if (!rc && tok->eos < 0 && !n_ends)
    recipe_warn(r, "warning: the tokenizer has no EOS (no tokenizer_config.json beside its tokenizer.json names an "
                "eos_token, and no generation_config.json an eos_token_id): completions end only at "
                "rollout.stop strings or rollout.max_new_tokens; set tokenizer.eos");
  /* a stop string that is a special token's text never matches: specials add no text */
  for (int i = 0; i < r->rollout.stop.n; i++) {
    int32_t id = tokenizer_find(tok, r->rollout.stop.items[i]);
    const char *b;
    size_t l;
    int special = 0;
    if (id >= 0 && !tokenizer_token_bytes(tok, id, &b, &l, &special, &te) && special)
      recipe_warn(r, "warning: rollout.stop \"%s\" is the text of special token %d, whose text never reaches the "
                  "completion: the string matches only when plain tokens spell it; to end at the token, list it in "
                  "rollout.stop_tokens",
                  recipe_clip(r->rollout.stop.items[i], shown, sizeof shown), id);
  }
  tokenizer_free(own);
  return rc;
}

/* Load a Lua script (reward.script, data.task) in the sandbox under the
 * recipe's limits, as the run will: it compiles, its top level runs, and it
 * defines fn (or fn_batch, when batch_ok). Errors name the script's FILE:LINE. */
static int check_script(recipe *r, const char *key, const char *path, const char *fn_key, const char *fn,
                        const char *args, int batch_ok, rl_err *e) {
  luahost_limits lim = recipe_lua_limits(r);
  rl_err le;
  luahost *h = luahost_open(path, &lim, &le);
  if (!h) return kerr(r, e, key, "%s", le.msg);
  char batch[LUAHOST_MAX_FN + 8];
  snprintf(batch, sizeof batch, "%s_batch", fn);
  int rc = 0;
  if (!luahost_has(h, fn) && !(batch_ok && luahost_has(h, batch))) {
    char have[600], mean[200] = "";
    luahost_functions(h, have, sizeof have);
    int best = 3;
    for (char *p = have; *p;) { /* the closest defined name, as a suggestion */
      size_t len = strcspn(p, ",");
      char one[128];
      snprintf(one, sizeof one, "%.*s", (int)(len < sizeof one ? len : sizeof one - 1), p);
      int d = recipe_edit_distance(fn, one);
      if (d < best) best = d, snprintf(mean, sizeof mean, " (did you mean '%s'?)", one);
      p += len;
      p += strspn(p, ", ");
    }
    const char *at = fn_key && is_set(r, fn_key) ? fn_key : key;
    rc = kerr(r, e, at, "%s defines no function %s%s%s; %s%s%s", path, fn, args, mean,
              have[0] ? "the functions it defines: " : "it defines no global function", have,
              fn_key && !is_set(r, fn_key) && have[0] ? " (set reward.function to call another)" : "");
  }
  luahost_close(h);
  return rc;
}

/* What every prompt must satisfy for this recipe to run it (prompts.h), with
 * the recipe's tokenizer: hf, the one check_tokenizer loaded (NULL when it
 * could not: it reported why); chars, made here into *tok (free it). */
static void data_limits(const recipe *r, const tokenizer *hf, prompts_limits *l, tokenizer **tok) {
  memset(l, 0, sizeof *l);
  *tok = NULL;
  rl_err te;
  if (r->tokenizer.type == TOKENIZER_CHARS && r->tokenizer.chars && tokenizer_chars_new(r->tokenizer.chars, tok, &te))
    *tok = NULL; /* a bad tokenizer.chars is check_tokenizer's error */
  l->tok = r->tokenizer.type == TOKENIZER_HF ? hf : *tok;
  /* a template without exactly one {prompt} is check_files' one error, not one a data line */
  const char *at = r->data.prompt_template ? strstr(r->data.prompt_template, "{prompt}") : NULL;
  l->tmpl = at && !strstr(at + 8, "{prompt}") ? r->data.prompt_template : NULL;
  if (r->train.algorithm == ALGO_SFT) {
    l->target_field = "completion"; /* LOOP_SFT_FIELD */
    if (r->model.has_init) l->max_seq_tokens = r->model.init.max_seq_len;
    else if (r->model.positions > 0) l->max_seq_tokens = r->model.positions;
  } else {
    l->max_prompt_tokens = r->rollout.max_prompt_tokens;
  }
}

typedef struct data_report {
  recipe *r;
  rl_err *e;
  const char *key;
} data_report;

static void data_bad(void *ud, const char *msg) {
  data_report *d = ud;
  kerr(d->r, d->e, d->key, "%s", msg);
}

/* data.prompts: every line parses as the run parses it (one pass, each bad
 * line reported as FILE:LINE[:COL]), the file holds prompts, and each prompt
 * fits the tokenizer, rollout.max_prompt_tokens and (sft) has its target. */
static int check_prompts_file(recipe *r, const tokenizer *hf, rl_err *e) {
  prompts_limits l;
  tokenizer *tok;
  data_limits(r, hf, &l, &tok);
  data_report d = {r, e, "data.prompts"};
  int64_t bad = prompts_check_jsonl(r->data.prompts, r->data.prompt_key, &l, data_bad, &d, NULL);
  if (tok) tokenizer_free(tok);
  return bad ? RL_EXIT_USAGE : 0;
}

/* data.task: the prompts of iteration 1 (prompts(rollout.batch, rng)), as the
 * run will ask for them, checked like a JSONL file's lines. */
static int check_task_prompts(recipe *r, const tokenizer *hf, rl_err *e) {
  luahost_limits lim = recipe_lua_limits(r);
  rl_err le;
  luahost *h = luahost_open(r->data.task, &lim, &le);
  if (!h) return kerr(r, e, "data.task", "%s", le.msg);
  luahost_prompt *p = NULL;
  int n = (int)r->rollout.batch, rc = 0;
  if (luahost_prompts(h, n, (uint64_t)r->seed, 1, &p, &le)) {
    rc = kerr(r, e, "data.task", "%s", le.msg);
  } else {
    prompts_limits l;
    tokenizer *tok;
    data_limits(r, hf, &l, &tok);
    for (int i = 0; i < n; i++)
      if (prompts_check_item(&l, p[i].prompt, p[i].extra_json, &le))
        rc = kerr(r, e, "data.task", "%s: prompts(n, rng) of iteration 1, item %d: %s", r->data.task, i + 1, le.msg);
    if (tok) tokenizer_free(tok);
    luahost_prompts_free(p, n);
  }
  luahost_close(h);
  return rc;
}

/* data.prompts / data.task and reward.script: present, and the files exist;
 * the Lua scripts load and define their functions; the prompts are checked
 * (check_prompts_file, check_task_prompts). */
static int check_files(recipe *r, int flags, const tokenizer *hf, rl_err *e) {
  int rc = 0;
  if (!r->data.prompts && !r->data.task)
    rc = kerr(r, e, "data", "missing: set data.prompts (a JSONL file) or data.task (a Lua script)");
  else if (r->data.prompts && r->data.task) {
    char where[1200];
    rc = kerr(r, e, "data.task", "data.prompts and data.task are mutually exclusive: keep one%s",
              exclusive_where(r, "data.prompts", "data.task", where, sizeof where));
  }
  if (!r->reward.script && r->train.algorithm != ALGO_SFT)
    rc = kerr(r, e, "reward.script", "missing: the Lua reward script is required (reward.script: rewards/x.lua)");
  if (r->data.prompt_template) { /* one {prompt}: where each prompt goes */
    const char *a = strstr(r->data.prompt_template, "{prompt}");
    if (!a)
      rc = kerr(r, e, "data.prompt_template", "has no {prompt}: write it where each prompt goes, e.g. "
                "\"<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n\"");
    else if (strstr(a + 8, "{prompt}"))
      rc = kerr(r, e, "data.prompt_template", "holds {prompt} more than once: each prompt goes in one place");
  }
  const char *fn = r->reward.function;
  char shown[4 * RECIPE_CLIP + 8];
  int ident = fn && (isalpha((unsigned char)fn[0]) || fn[0] == '_') && strlen(fn) <= LUAHOST_MAX_FN;
  for (const char *p = fn; ident && *p; p++) ident = isalnum((unsigned char)*p) || *p == '_';
  if (!ident)
    rc = kerr(r, e, "reward.function", "'%s' is not a Lua function name (letters, digits and '_', not starting "
              "with a digit, at most %d characters)", recipe_clip(fn ? fn : "", shown, sizeof shown), LUAHOST_MAX_FN);
  if (flags & RECIPE_NO_FS) return rc;
  const char *keys[] = {"data.prompts", "data.task", "reward.script"};
  const char *vals[] = {r->data.prompts, r->data.task, r->reward.script};
  int missing[3] = {0};
  for (int i = 0; i < 3; i++) {
    const char *why = vals[i] ? check_path(vals[i], 0) : NULL;
    char hint[160];
    if (why) missing[i] = 1, rc = kerr(r, e, keys[i], "'%s': %s (%s)", vals[i], why, path_hint(r, keys[i], hint, sizeof hint));
  }
  int data = !(flags & RECIPE_NO_DATA);
  if (r->data.task && !r->data.prompts && !missing[1] &&
      (check_script(r, "data.task", r->data.task, NULL, "prompts", "(n, rng)", 0, e) ||
       (data && check_task_prompts(r, hf, e))))
    rc = RL_EXIT_USAGE;
  if (data && r->data.prompts && !r->data.task && !missing[0] && check_prompts_file(r, hf, e)) rc = RL_EXIT_USAGE;
  if (r->reward.script && !missing[2] && ident &&
      check_script(r, "reward.script", r->reward.script, "reward.function", fn, "(sample)", 1, e))
    rc = RL_EXIT_USAGE;
  return rc;
}

static int check_precision(recipe *r, rl_err *e) {
  int rc = 0, emu = 0;
  char why[600];
  prec_format ro = r->precision.rollout, tr = r->precision.train;
  if (matrix_check(ro, tr, HW_CPU, 1, r->precision.experimental, &emu, why, sizeof why))
    return kerr(r, e, is_set(r, "precision.train") ? "precision.train" : "precision.rollout", "%s", why);
  if ((ro == PREC_NVFP4 || tr == PREC_NVFP4) && r->model.is_moe == 0)
    rc = kerr(r, e, "precision.rollout", "nvfp4 applies to MoE experts only, and this model is dense (qwen3): "
              "use a qwen3_moe model or another format");
  if (r->model.layers && r->precision.bf16_first_layers + r->precision.bf16_last_layers > r->model.layers)
    rc = kerr(r, e, is_set(r, "precision.bf16_last_layers") ? "precision.bf16_last_layers" : "precision.bf16_first_layers",
              "first %lld + last %lld BF16 layers exceed the model's %lld layers",
              (long long)r->precision.bf16_first_layers, (long long)r->precision.bf16_last_layers,
              (long long)r->model.layers);
  for (int i = 0; i < r->precision.keep_bf16.n; i++) { /* fnmatch patterns: a malformed one would match nothing */
    rl_err pe;
    if (model_keep_bf16_pattern_check(r->precision.keep_bf16.items[i], &pe))
      rc = kerr(r, e, "precision.keep_bf16", "%s", pe.msg);
  }
  /* ue8m0 without fp8-block is a mistake; fp32, the default written out (a run's recipe.resolved.yaml), is not */
  if (is_set(r, "precision.scale_fmt") && r->precision.scale_fmt != SCALE_FMT_FP32 && ro != PREC_FP8_BLOCK &&
      tr != PREC_FP8_BLOCK)
    rc = kerr(r, e, "precision.scale_fmt", "applies to fp8-block only (rollout %s, train %s)", prec_names[ro], prec_names[tr]);
  const precision_pair *p = matrix_pair(ro, tr);
  if (p->drift && r->train.algorithm != ALGO_SFT && /* sft samples nothing: no rollout log-probs to drift */
      (r->train.tis.mode == TIS_OFF || (r->model.is_moe == 1 && !r->train.r3))) {
    char fix[200];
    snprintf(fix, sizeof fix, "%s%s%s", r->train.tis.mode == TIS_OFF ? "train.tis.mode: truncate (TIS)" : "",
             r->train.tis.mode == TIS_OFF && r->model.is_moe == 1 && !r->train.r3 ? " and " : "",
             r->model.is_moe == 1 && !r->train.r3 ? "train.r3: true (routing replay, MoE)" : "");
    recipe_warn(r, "warning: rollout %s x train %s: precision drift between rollout and training log-probs is "
                "expected; recommended: %s", prec_names[ro], prec_names[tr], fix);
  }
  return rc;
}

/* The keys an sft run does not read (no rollout, no reward, no RL loss terms):
 * set anyway, they are named in one note, since they change nothing. */
static void note_sft_unused(recipe *r) {
  static const char *const unused[] = {
      "rollout.samples_per_prompt", "rollout.temperature", "rollout.top_p", "rollout.top_k", "rollout.max_new_tokens",
      "rollout.stop", "rollout.stop_tokens", "rollout.generation_config_eos", "reward.script", "reward.function",
      "reward.limits.instructions", "reward.limits.memory_mb", "reward.limits.timeout_ms", "train.clip_low",
      "train.clip_high", "train.kl_coef", "train.entropy_coef", "train.loss_agg", "train.tis.mode", "train.tis.clip",
      "train.tis.low", "train.tis.high", "train.r3", "precision.rollout"};
  char list[1024] = "";
  size_t at = 0;
  int n = 0;
  if (is_run_recipe(r->file)) return; /* a run's: every key written out */
  for (size_t i = 0; i < sizeof unused / sizeof *unused && at < sizeof list; i++) {
    /* written in this recipe or a --set (a base's RL keys are the base's), and samples_per_prompt not as 1 */
    const recipe_loc l = recipe_key_loc(r, unused[i]);
    if (!is_set(r, unused[i]) || !l.file || (strcmp(l.file, r->file ? r->file : "") && strncmp(l.file, "--set ", 6)) ||
        (!strcmp(unused[i], "rollout.samples_per_prompt") && r->rollout.samples_per_prompt == 1))
      continue;
    at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", n++ ? ", " : "", unused[i]);
  }
  if (n)
    recipe_warn(r, "note: train.algorithm sft does not read %s (no rollout, reward or RL loss terms): %s no effect",
                list, n == 1 ? "it has" : "they have");
}

static int check_train(recipe *r, rl_err *e) {
  int rc = 0;
  if (r->train.algorithm == ALGO_SFT) note_sft_unused(r);
  if (r->train.algorithm != ALGO_SFT && r->rollout.samples_per_prompt < 2)
    rc = kerr(r, e, is_set(r, "rollout.samples_per_prompt") ? "rollout.samples_per_prompt" : "train.algorithm",
              "%s compares completions within a group: rollout.samples_per_prompt must be at least 2",
              r->train.algorithm == ALGO_GRPO ? "grpo" : r->train.algorithm == ALGO_DR_GRPO ? "dr_grpo" : "rloo");
  if (!is_set(r, "train.microbatch") && r->train.microbatch > r->rollout.batch * r->rollout.samples_per_prompt)
    r->train.microbatch = r->rollout.batch * r->rollout.samples_per_prompt; /* the default: at most an iteration */
  if (r->train.microbatch > r->rollout.batch * r->rollout.samples_per_prompt)
    rc = kerr(r, e, "train.microbatch", "%lld is more than the %lld sequences of one iteration (batch x samples_per_prompt)",
              (long long)r->train.microbatch, (long long)(r->rollout.batch * r->rollout.samples_per_prompt));
  static const struct { const char *key; tis_mode mode; } tis_keys[] = {
      {"train.tis.clip", TIS_TRUNCATE}, {"train.tis.low", TIS_MASK}, {"train.tis.high", TIS_MASK}};
  for (int i = 0; i < 3; i++)
    if (is_set(r, tis_keys[i].key) && r->train.tis.mode != tis_keys[i].mode)
      rc = kerr(r, e, tis_keys[i].key, "applies to train.tis.mode: %s (mode is %s)",
                tis_keys[i].mode == TIS_TRUNCATE ? "truncate" : "mask",
                r->train.tis.mode == TIS_OFF ? "off" : r->train.tis.mode == TIS_TRUNCATE ? "truncate" : "mask");
  /* RL.md's interval is closed: low == high (both 1) keeps only ratios of exactly 1 */
  if (r->train.tis.mode == TIS_MASK && r->train.tis.low > r->train.tis.high)
    rc = kerr(r, e, "train.tis.low", "must not be above train.tis.high");
  if (r->train.r3 && r->model.is_moe == 0)
    rc = kerr(r, e, "train.r3", "routing replay needs a MoE model (qwen3_moe); this model is dense");
  return rc;
}

/* GPU lists: no repeats; a GPU in both lists is gpus.train[0] (the rollout
 * part colocated with data-parallel rank 0); every other rollout GPU lies
 * outside gpus.train (a replica fed over NCCL). */
static int check_gpus(recipe *r, rl_err *e) {
  int rc = 0;
  recipe_intlist *ls[2] = {&r->gpus.rollout, &r->gpus.train};
  const char *names[2] = {"gpus.rollout", "gpus.train"};
  /* what the run loop can place: the trainer broadcasts to at most SYNC_NCCL_MAX_RANKS − 1
   * rollout GPUs (loop_int.h's LOOP_ROLLOUT_MAX), and trains on at most TRAIN_DP_MAX */
  const int most[2] = {SYNC_NCCL_MAX_RANKS - 1, TRAIN_DP_MAX};
  for (int k = 0; k < 2; k++) {
    if (ls[k]->n == 0) rc = kerr(r, e, names[k], "empty: list at least one GPU index");
    if (ls[k]->n > most[k]) rc = kerr(r, e, names[k], "%d GPUs listed, at most %d", ls[k]->n, most[k]);
    for (int i = 0; i < ls[k]->n; i++)
      for (int j = 0; j < i; j++)
        if (ls[k]->items[i] == ls[k]->items[j])
          rc = kerr(r, e, names[k], "GPU %lld is listed twice", (long long)ls[k]->items[i]);
  }
  if (rc) return rc;
  int apart = 0; /* rollout GPUs other than gpus.train[0] */
  for (int i = 0; i < ls[0]->n; i++) {
    int64_t g = ls[0]->items[i];
    for (int j = 1; j < ls[1]->n; j++)
      if (ls[1]->items[j] == g)
        return kerr(r, e, "gpus.rollout", "GPU %lld is data-parallel rank %d of gpus.train; a rollout GPU is "
                    "gpus.train[0] (%lld, colocated with rank 0) or a GPU outside gpus.train", (long long)g, j,
                    (long long)ls[1]->items[0]);
    apart += g != ls[1]->items[0];
  }
  if (r->sync.transport == SYNC_DEVICE && apart)
    rc = kerr(r, e, "sync.transport", "device needs the rollout on the trainer's GPU alone (gpus.rollout = [%lld], "
              "gpus.train[0])", (long long)ls[1]->items[0]);
  if (r->sync.transport == SYNC_NCCL && !apart)
    rc = kerr(r, e, "sync.transport", "nccl needs rollout and training on different GPUs; colocated runs sync on the device");
  return rc;
}

int recipe_check_rules(recipe *r, int flags, rl_err *e) {
  int rc = 0;
  const char *nm = r->name;
  int ok = nm[0] && strlen(nm) <= 64 && isalnum((unsigned char)nm[0]);
  for (const char *p = nm; ok && *p; p++) ok = isalnum((unsigned char)*p) || strchr("._-", *p);
  char shown[4 * RECIPE_CLIP + 8];
  if (!ok && is_set(r, "name"))
    rc = kerr(r, e, "name", "'%s' is not a run name: use letters, digits, '.', '_', '-' (at most 64, starting "
              "with a letter or digit)", recipe_clip(nm, shown, sizeof shown));
  else if (!ok) /* the user wrote no name: say where this one came from */
    rc = kerr(r, e, "name", "the run name defaults to the file name, '%s', which is not a run name (letters, digits, "
              "'.', '_', '-', at most 64, starting with a letter or digit): set name: in the recipe (or --set "
              "name=NAME), or rename the file", recipe_clip(nm, shown, sizeof shown));
  for (int i = 0; i < r->hardware.require.n; i++)
    if (hw_class_of_name(r->hardware.require.items[i]) == HW_CLASS_COUNT)
      rc = kerr(r, e, "hardware.require", "unknown hardware '%s'; valid: %s",
                recipe_clip(r->hardware.require.items[i], shown, sizeof shown), hw_names_list());
  if (check_model(r, flags, e)) rc = RL_EXIT_USAGE;
  tokenizer *tok = NULL; /* the hf tokenizer check_tokenizer loaded, for the checks after it */
  if (check_tokenizer(r, flags, &tok, e)) rc = RL_EXIT_USAGE;
  else if (check_stop_tokens(r, flags, tok, e)) rc = RL_EXIT_USAGE;
  if (check_files(r, flags, tok, e)) rc = RL_EXIT_USAGE;
  tokenizer_free(tok);
  if (check_train(r, e)) rc = RL_EXIT_USAGE;
  if (check_gpus(r, e)) rc = RL_EXIT_USAGE;
  if (!rc && check_precision(r, e)) rc = RL_EXIT_USAGE;
  return rc;
}

hw_class recipe_run_class(const recipe *r, const hw_target *t) {
  if (r->device == DEVICE_CPU || t->cls == HW_CPU) return HW_CPU;
  return t->cls;
}

/* Does target t satisfy one hardware.require entry (a name or a class)? */
static int require_matches(const hw_target *t, const char *req) {
  hw_class c = hw_class_of_name(req);
  for (int k = 0; hw_class_names[k]; k++)
    if (!strcmp(hw_class_names[k], req)) return t->cls == c;
  if (!t->detected) return !strcmp(t->name, req);
  char low[256];
  size_t n = 0;
  for (; t->name[n] && n + 1 < sizeof low; n++) low[n] = (char)tolower((unsigned char)t->name[n]);
  low[n] = 0;
  size_t rl = strlen(req);
  for (const char *p = strstr(low, req); p; p = strstr(p + 1, req))
    if ((p == low || !isalnum((unsigned char)p[-1])) && !isalnum((unsigned char)p[rl])) return 1;
  return 0;
}

int recipe_check_hardware(recipe *r, const hw_target *t, int *emulated, rl_err *e) {
  rl_err_clear(e);
  *emulated = 0;
  int bad = 0;
  recipe_errs_begin(e, r->file); /* listed by line, like validation's errors */
  if (r->device == DEVICE_CUDA && t->cls == HW_CPU)
    bad = kerr(r, e, "device", "cuda, but %s has no GPU%s%s", t->detected ? "this machine" : "the target 'cpu'",
               t->note[0] ? ": " : "", t->note);
  hw_class cls = recipe_run_class(r, t);
  const char *cname = cls == HW_UNSUPPORTED ? "unsupported" : hw_class_names[cls];
  if (r->hardware.require.n) {
    int any = 0;
    for (int i = 0; i < r->hardware.require.n; i++) any |= require_matches(t, r->hardware.require.items[i]);
    if (!any || cls == HW_CPU) {
      int cpu_ok = 0;
      for (int i = 0; i < r->hardware.require.n; i++) cpu_ok |= !strcmp(r->hardware.require.items[i], "cpu");
      if (!(cls == HW_CPU && cpu_ok))
        bad = kerr(r, e, "hardware.require", "the recipe requires %s%s, and the run would be on %s (%s)",
                   r->hardware.require.items[0], r->hardware.require.n > 1 ? " (or another listed)" : "",
                   cls == HW_CPU ? "the CPU" : t->name, cname);
    }
  }
  if (cls == HW_CPU) {
    if (r->hardware.min_gpus > 0)
      bad = kerr(r, e, "hardware.min_gpus", "%lld, but the run would be on the CPU (no GPU)", (long long)r->hardware.min_gpus);
    if (r->hardware.min_gpu_memory_gb > 0)
      bad = kerr(r, e, "hardware.min_gpu_memory_gb", "%g, but the run would be on the CPU (no GPU)", r->hardware.min_gpu_memory_gb);
  } else {
    if (t->n_gpus < r->hardware.min_gpus)
      bad = kerr(r, e, "hardware.min_gpus", "%lld, but %s has %d GPU%s", (long long)r->hardware.min_gpus, t->name,
                 t->n_gpus, t->n_gpus == 1 ? "" : "s");
    const recipe_intlist *ls[2] = {&r->gpus.rollout, &r->gpus.train};
    const char *names[2] = {"gpus.rollout", "gpus.train"};
    for (int k = 0; k < 2; k++)
      for (int i = 0; i < ls[k]->n; i++)
        if (ls[k]->items[i] >= t->n_gpus) {
          bad = kerr(r, e, names[k], "uses GPU %lld, but %s has %d GPU%s (GPUs 0..%d)%s", (long long)ls[k]->items[i],
                     t->name, t->n_gpus, t->n_gpus == 1 ? "" : "s", t->n_gpus - 1,
                     t->detected ? "" : "; name a count with --hardware NAME:COUNT");
          break;
        }
    if (t->mem_gb < r->hardware.min_gpu_memory_gb)
      bad = kerr(r, e, "hardware.min_gpu_memory_gb", "%g GB, but %s has %.0f GB per GPU", r->hardware.min_gpu_memory_gb,
                 t->name, t->mem_gb);
  }
  char why[600];
  int rc = matrix_check(r->precision.rollout, r->precision.train, cls, r->precision.emulate,
                        r->precision.experimental, emulated, why, sizeof why);
  if (rc) bad = kerr(r, e, "precision.rollout", "on %s: %s", cls == HW_CPU ? "cpu" : t->name, why);
  else if (*emulated) recipe_warn(r, "emulated: %s", why);
  else if (r->precision.emulate && cls != HW_CPU)
    recipe_warn(r, "note: precision.emulate: true has no effect on %s: rollout %s and train %s run natively", cname,
                prec_names[r->precision.rollout], prec_names[r->precision.train]);
  if (!rc && r->precision.exact_logprobs) {
    if (cls == HW_CPU)
      recipe_warn(r, "note: precision.exact_logprobs has no effect on the CPU: its rollout log-probs already equal "
                     "the trainer's bit for bit when rollout and train share a format");
    else if (r->precision.rollout != r->precision.train)
      recipe_warn(r, "note: precision.exact_logprobs: the rollout engine reproduces the %s forward bit for bit, but "
                     "rollout %s and train %s still differ by their formats (mismatch/* measures it)",
                  prec_names[r->precision.rollout], prec_names[r->precision.rollout], prec_names[r->precision.train]);
    else if (r->precision.rollout == PREC_NVFP4)
      recipe_warn(r, "note: precision.exact_logprobs with nvfp4 experts is not exact: an NVFP4 expert GEMM scales "
                     "its activations by the amax of all its rows, which differ between decode and training batches");
  }
  recipe_errs_end(e);
  if (bad) {
    e->code = RL_EXIT_HARDWARE;
    return RL_EXIT_HARDWARE;
  }
  return RL_EXIT_OK;
}

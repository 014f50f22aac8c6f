/* inputs.c — see inputs.h. */
#include "runner/inputs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runner/recipe_tree.h"
#include "state/ckpt.h"

luahost_limits recipe_lua_limits(const recipe *r) {
  luahost_limits lim = luahost_default_limits();
  if (r->reward.limits.instructions > 0) lim.instructions = r->reward.limits.instructions;
  if (r->reward.limits.memory_mb > 0) lim.memory_bytes = (size_t)r->reward.limits.memory_mb << 20;
  if (r->reward.limits.timeout_ms > 0) lim.seconds = (double)r->reward.limits.timeout_ms / 1000.0;
  return lim;
}

/* dir/name (malloc'd; "dir/" gives dir/name, not dir//name). */
static char *path_in(const char *dir, const char *name) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  char *p = rl_xmalloc(n + strlen(name) + 2);
  sprintf(p, "%.*s/%s", (int)n, dir, name);
  return p;
}

/* dir/name when it is there (a regular file, or anything but a missing
 * entry when any_kind: the reader then says what is wrong with it), else NULL. */
static char *present_in(const char *dir, const char *name, int any_kind) {
  char *p = path_in(dir, name);
  struct stat st;
  if (stat(p, &st) == 0 ? (any_kind || S_ISREG(st.st_mode)) : (any_kind && lstat(p, &st) == 0)) return p;
  free(p);
  return NULL;
}

char *recipe_tokenizer_path(const recipe *r, const char **key) {
  *key = "tokenizer.path";
  if (r->tokenizer.path) return rl_xstrdup(r->tokenizer.path);
  if (r->model.path) {
    *key = "model.path";
    return path_in(r->model.path, "tokenizer.json");
  }
  *key = "model.checkpoint";
  if (!r->model.checkpoint) return NULL;
  char *p = present_in(r->model.checkpoint, "tokenizer.json", 1); /* the checkpoint's own copy */
  if (p) return p;
  json_t *t = recipe_checkpoint_tokenizer(r); /* a checkpoint written before they carried one: where its run's was */
  const char *tp = json_string_value(json_object_get(t, "path"));
  if (tp) p = rl_xstrdup(tp);
  json_decref(t);
  return p;
}

json_t *recipe_checkpoint_tokenizer(const recipe *r) {
  ckpt_info ci;
  rl_err ce;
  json_t *t = NULL;
  if (r->model.checkpoint && ckpt_read_manifest(r->model.checkpoint, &ci, &ce) == 0) {
    json_t *x = json_loads(ci.extra_json, 0, NULL);
    t = json_incref(json_object_get(x, "tokenizer"));
    json_decref(x);
    ckpt_info_free(&ci);
  }
  return t;
}

int recipe_tokenizer(const recipe *r, tokenizer **out, rl_err *e) {
  *out = NULL;
  if (r->tokenizer.type == TOKENIZER_CHARS) return tokenizer_chars_new(r->tokenizer.chars, out, e);
  const char *key;
  char *p = recipe_tokenizer_path(r, &key);
  if (!p)
    return rl_errf(e, RL_EXIT_USAGE, "tokenizer.type hf: no tokenizer.json (set tokenizer.path, or model.path to a "
                   "directory that holds one)");
  const char *blame = NULL;
  int rc = tokenizer_hf_new(p, out, e);
  if (!rc && (rc = recipe_tokenizer_specials(r, *out, p, &blame, e))) {
    if (blame) rl_err_prefix(e, "%s: ", blame);
    tokenizer_free(*out), *out = NULL;
  }
  free(p);
  return rc;
}

/* The generation_config.json of the model's source directory (model.path,
 * else model.checkpoint), when there is one. */
static char *generation_config_file(const recipe *r, int any_kind) {
  const char *dir = r->model.path ? r->model.path : r->model.checkpoint;
  return dir ? present_in(dir, "generation_config.json", any_kind) : NULL;
}

char *recipe_generation_config_path(const recipe *r) {
  if (r->tokenizer.type != TOKENIZER_HF || !r->rollout.generation_config_eos) return NULL;
  return generation_config_file(r, 1);
}

/* Add id to ids[0..*n) unless it is there or is the EOS. */
static void end_id_add(int32_t *ids, int *n, int32_t id, int32_t eos) {
  if (id == eos) return;
  for (int i = 0; i < *n; i++)
    if (ids[i] == id) return;
  ids[(*n)++] = id;
}

int recipe_end_ids(const recipe *r, const tokenizer *tok, int32_t **ids, int *n, int *n_listed, const char **blame,
                   rl_err *e) {
  *ids = NULL, *n = 0, *blame = NULL;
  if (n_listed) *n_listed = 0;
  char *gp = recipe_generation_config_path(r);
  json_t *root = NULL, *eid = NULL;
  if (gp) {
    char *text = NULL;
    size_t len = 0;
    json_error_t je;
    *blame = "rollout.generation_config_eos";
    if (rl_read_file(gp, &text, &len, e)) {
      free(gp);
      rl_err_prefix(e, "the model's generation config: ");
      return e->code;
    }
    root = json_loadb(text, len, 0, &je);
    free(text);
    if (!json_is_object(root)) {
      int rc = root ? rl_errf(e, RL_EXIT_USAGE, "%s: not a JSON object (the model's generation config; fix the "
                              "file, or set rollout.generation_config_eos: false to ignore it)", gp)
                    : rl_errf(e, RL_EXIT_USAGE, "%s:%d:%d: %s (the model's generation config; fix the file, or "
                              "set rollout.generation_config_eos: false to ignore it)", gp, je.line, je.column > 0 ? je.column : 1,
                              je.text);
      json_decref(root), free(gp);
      return rc;
    }
    eid = json_object_get(root, "eos_token_id");
    size_t k;
    json_t *v;
    int bad = !(eid == NULL || json_is_null(eid) || json_is_integer(eid) || json_is_array(eid));
    json_array_foreach(eid, k, v) bad |= !json_is_integer(v);
    if (bad) {
      int rc = rl_errf(e, RL_EXIT_USAGE, "%s: eos_token_id is neither a token id nor a list of ids (fix the file, or "
                       "set rollout.generation_config_eos: false to ignore it)", gp);
      json_decref(root), free(gp);
      return rc;
    }
  }
  int cap = r->rollout.stop_tokens.n + (json_is_array(eid) ? (int)json_array_size(eid) : 1);
  int32_t *v = rl_xmalloc((size_t)(cap ? cap : 1) * sizeof *v);
  int rc = 0, m = 0;
  for (int i = 0; i < r->rollout.stop_tokens.n && !rc; i++) {
    int32_t id = tokenizer_find(tok, r->rollout.stop_tokens.items[i]);
    char shown[4 * RECIPE_CLIP + 8];
    if (id < 0)
      *blame = "rollout.stop_tokens",
      rc = rl_errf(e, RL_EXIT_USAGE, "\"%s\" is no token of the tokenizer: give a token's exact text (e.g. "
                   "<|endoftext|>); for text that ends a completion, use rollout.stop",
                   recipe_clip(r->rollout.stop_tokens.items[i], shown, sizeof shown));
    else end_id_add(v, &m, id, tok->eos);
  }
  int listed = m; /* those from rollout.stop_tokens come first */
  const int64_t V = tokenizer_vocab_size(tok);
  for (size_t k = 0; !rc && eid && !json_is_null(eid) && k < (json_is_array(eid) ? json_array_size(eid) : 1); k++) {
    json_int_t id = json_integer_value(json_is_array(eid) ? json_array_get(eid, k) : eid);
    if (id < 0 || id >= V)
      *blame = "rollout.generation_config_eos",
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: eos_token_id %lld is no id of the tokenizer (it has %lld): it belongs "
                   "to another tokenizer; fix the file, or set rollout.generation_config_eos: false to ignore it",
                   gp, (long long)id, (long long)V);
    else end_id_add(v, &m, (int32_t)id, tok->eos);
  }
  json_decref(root);
  free(gp);
  if (rc || !m) {
    free(v);
    return rc;
  }
  *ids = v, *n = m;
  if (n_listed) *n_listed = listed;
  return 0;
}

int recipe_checkpoint_copies(const recipe *r, recipe_copies *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  if (r->tokenizer.type != TOKENIZER_HF) return 0;
  const char *key;
  char *tp = recipe_tokenizer_path(r, &key);
  if (!tp) return rl_errf(e, RL_EXIT_FAIL, "checkpoint: the run's tokenizer.json is not known");
  out->own[out->n] = tp, out->c[out->n].src = tp, out->c[out->n++].name = "tokenizer.json";
  /* the files beside it that complete a tokenizer for transformers too */
  static const char *const beside[] = {"tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"};
  char *slash = strrchr(tp, '/');
  char *dir = rl_xstrdup(slash ? tp : ".");
  if (slash) dir[slash - tp + 1] = 0;
  for (size_t i = 0; i < sizeof beside / sizeof *beside; i++) {
    char *p = present_in(dir, beside[i], 0);
    if (p) out->own[out->n] = p, out->c[out->n].src = p, out->c[out->n++].name = beside[i];
  }
  free(dir);
  char *gp = generation_config_file(r, 0);
  if (gp) out->own[out->n] = gp, out->c[out->n].src = gp, out->c[out->n++].name = "generation_config.json";
  return 0;
}

void recipe_copies_free(recipe_copies *c) {
  for (int i = 0; i < c->n; i++) free(c->own[i]);
  memset(c, 0, sizeof *c);
}

int recipe_tokenizer_specials(const recipe *r, tokenizer *t, const char *path, const char **blame, rl_err *e) {
  static const char *const key_of[2] = {"tokenizer.bos", "tokenizer.eos"};
  const char *text_of[2] = {r->tokenizer.bos, r->tokenizer.eos};
  *blame = NULL;
  for (int i = 0; i < 2; i++) {
    const char *bad = tokenizer_hf_config_problem(t, i);
    if (!text_of[i] && bad)
      return rl_errf(e, RL_EXIT_USAGE, "%s: fix it there, or set %s to the token's text", bad, key_of[i]);
    if (!text_of[i]) continue;
    int32_t id = tokenizer_find(t, text_of[i]);
    if (id < 0) {
      *blame = key_of[i];
      return rl_errf(e, RL_EXIT_USAGE, "\"%s\" is no token of %s: give a token's exact text (e.g. <|im_end|>)",
                     text_of[i], path);
    }
    if (i == 0) t->bos = id;
    else t->eos = id;
  }
  return 0;
}

int recipe_prompts(const recipe *r, prompt_source **out, rl_err *e) {
  *out = NULL;
  if (r->data.prompts) {
    int rc = prompts_open_jsonl(r->data.prompts, r->data.prompt_key, r->data.answer_key, out, e);
    if (!rc) prompts_set_shuffle(*out, r->data.shuffle), prompts_set_template(*out, r->data.prompt_template);
    return rc;
  }
  if (r->data.task) {
    luahost_limits lim = recipe_lua_limits(r);
    int rc = prompts_open_task(r->data.task, &lim, out, e);
    if (!rc) prompts_set_template(*out, r->data.prompt_template);
    return rc;
  }
  return rl_errf(e, RL_EXIT_USAGE, "data: no prompt source: set data.prompts (JSONL) or data.task (Lua)");
}

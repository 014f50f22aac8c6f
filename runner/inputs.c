/* inputs.c — see inputs.h. */
#include "runner/inputs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/ckpt.h"

luahost_limits recipe_lua_limits(const recipe *r) {
  luahost_limits lim = luahost_default_limits();
  if (r->reward.limits.instructions > 0) lim.instructions = r->reward.limits.instructions;
  if (r->reward.limits.memory_mb > 0) lim.memory_bytes = (size_t)r->reward.limits.memory_mb << 20;
  if (r->reward.limits.timeout_ms > 0) lim.seconds = (double)r->reward.limits.timeout_ms / 1000.0;
  return lim;
}

char *recipe_tokenizer_path(const recipe *r, const char **key) {
  *key = "tokenizer.path";
  if (r->tokenizer.path) return rl_xstrdup(r->tokenizer.path);
  if (r->model.path) {
    *key = "model.path";
    size_t n = strlen(r->model.path);
    while (n > 1 && r->model.path[n - 1] == '/') n--; /* "dir/" names dir/tokenizer.json, not dir//… */
    char *p = rl_xmalloc(n + 16);
    sprintf(p, "%.*s/tokenizer.json", (int)n, r->model.path);
    return p;
  }
  *key = "model.checkpoint";
  ckpt_info ci;
  rl_err ce;
  char *p = NULL;
  if (r->model.checkpoint && ckpt_read_manifest(r->model.checkpoint, &ci, &ce) == 0) {
    json_t *x = json_loads(ci.extra_json, 0, NULL), *t = json_object_get(x, "tokenizer");
    const char *tp = json_string_value(json_object_get(t, "path"));
    if (tp) p = rl_xstrdup(tp);
    json_decref(x);
    ckpt_info_free(&ci);
  }
  return p;
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

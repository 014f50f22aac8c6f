/* inputs.c — see inputs.h. */
#include "runner/inputs.h"

luahost_limits recipe_lua_limits(const recipe *r) {
  luahost_limits lim = luahost_default_limits();
  if (r->reward.limits.instructions > 0) lim.instructions = r->reward.limits.instructions;
  if (r->reward.limits.memory_mb > 0) lim.memory_bytes = (size_t)r->reward.limits.memory_mb << 20;
  if (r->reward.limits.timeout_ms > 0) lim.seconds = (double)r->reward.limits.timeout_ms / 1000.0;
  return lim;
}

int recipe_tokenizer(const recipe *r, tokenizer **out, rl_err *e) {
  *out = NULL;
  if (r->tokenizer.type == TOKENIZER_CHARS) return tokenizer_chars_new(r->tokenizer.chars, out, e);
  return rl_errf(e, RL_EXIT_USAGE,
                 "tokenizer.type hf (tokenizer.json) is not implemented yet: use tokenizer.type: chars");
}

int recipe_prompts(const recipe *r, prompt_source **out, rl_err *e) {
  *out = NULL;
  if (r->data.prompts) {
    int rc = prompts_open_jsonl(r->data.prompts, r->data.prompt_key, r->data.answer_key, out, e);
    if (!rc) prompts_set_shuffle(*out, r->data.shuffle);
    return rc;
  }
  if (r->data.task) {
    luahost_limits lim = recipe_lua_limits(r);
    return prompts_open_task(r->data.task, &lim, out, e);
  }
  return rl_errf(e, RL_EXIT_USAGE, "data: no prompt source: set data.prompts (JSONL) or data.task (Lua)");
}

/* inputs.h — what a recipe's tokenizer, data and reward.limits sections make:
 * the tokenizer, the prompt source and the Lua limits, built from a resolved
 * recipe. They live in runner (runner → stages): the stages take plain
 * arguments and know nothing of recipes.
 *
 *   tokenizer *t; prompt_source *src;
 *   if (recipe_tokenizer(&r, &t, &e) || recipe_prompts(&r, &src, &e)) ...
 */
#ifndef RLRUN_INPUTS_H
#define RLRUN_INPUTS_H

#include <jansson.h>

#include "kernels/common.h"
#include "lua/host.h"
#include "runner/recipe.h"
#include "state/ckpt.h"
#include "stages/prompts.h"
#include "stages/tokenizer.h"

/* The Lua limits of reward.limits (reward hooks and task scripts run under
 * them); a limit the recipe leaves at 0 (an unresolved recipe) keeps the
 * host's default. */
luahost_limits recipe_lua_limits(const recipe *r);
/* The tokenizer the recipe declares: chars from tokenizer.chars; hf from the
 * tokenizer.json recipe_tokenizer_path names. */
int recipe_tokenizer(const recipe *r, tokenizer **out, rl_err *e);
/* Where an hf tokenizer's tokenizer.json is (malloc'd): tokenizer.path, else
 * model.path's tokenizer.json, else model.checkpoint's own copy, else (a
 * checkpoint written before they carried one) the one its run recorded (its
 * manifest's extra.tokenizer.path); NULL when none of them gives one.
 * *key: the recipe key the path comes from (for messages). */
char *recipe_tokenizer_path(const recipe *r, const char **key);
/* The tokenizer model.checkpoint's run recorded (its manifest's
 * extra.tokenizer: {"type": "chars", "chars"} or {"type": "hf", "path",
 * "sha256"}), a new reference; NULL when there is no such record. */
json_t *recipe_checkpoint_tokenizer(const recipe *r);
/* An hf tokenizer's BOS / EOS as the recipe sets them (tokenizer.bos /
 * tokenizer.eos over tokenizer_config.json's, which, naming a token the file
 * lacks, the recipe must override): 0, or RL_EXIT_USAGE with *blame the key at
 * fault ("tokenizer.bos", "tokenizer.eos"; NULL: the file at path). */
int recipe_tokenizer_specials(const recipe *r, tokenizer *t, const char *path, const char **blame, rl_err *e);
/* The generation_config.json whose eos_token_id ends completions (malloc'd):
 * model.path's, else model.checkpoint's copy, with tokenizer.type hf and
 * rollout.generation_config_eos; NULL when there is none. */
char *recipe_generation_config_path(const recipe *r);
/* The ids besides the tokenizer's EOS that end a completion as it does:
 * rollout.stop_tokens' (in order; *n_listed of them, may be NULL), then the
 * eos_token_id (an id or a list) of recipe_generation_config_path's file, as
 * transformers' generate stops at them; repeats and the EOS itself left out.
 * *ids malloc'd, NULL when *n is 0.
 * RL_EXIT_USAGE, *blame the key at fault, for a stop token that is no token, a
 * generation config that is no JSON object, an eos_token_id of another type or
 * an id the tokenizer does not have. */
int recipe_end_ids(const recipe *r, const tokenizer *tok, int32_t **ids, int *n, int *n_listed, const char **blame,
                   rl_err *e);

/* The files an hf run's checkpoint carries (ckpt_content.copies), so that it
 * loads as a model with its tokenizer (a run from it, transformers): the
 * tokenizer.json; tokenizer_config.json, special_tokens_map.json and
 * chat_template.jinja beside it; the model's generation_config.json. */
typedef struct recipe_copies {
  ckpt_copy c[CKPT_MAX_COPIES];
  char *own[CKPT_MAX_COPIES];
  int n;
} recipe_copies;
int recipe_checkpoint_copies(const recipe *r, recipe_copies *out, rl_err *e);
void recipe_copies_free(recipe_copies *c);

/* Whichever of data.prompts / data.task the recipe names (data.shuffle kept;
 * a task script runs under recipe_lua_limits). */
int recipe_prompts(const recipe *r, prompt_source **out, rl_err *e);

#endif

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

#include "kernels/common.h"
#include "lua/host.h"
#include "runner/recipe.h"
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
 * model.path's tokenizer.json, else the one model.checkpoint's run recorded
 * (its manifest's extra.tokenizer.path); NULL when none of them gives one.
 * *key: the recipe key the path comes from (for messages). */
char *recipe_tokenizer_path(const recipe *r, const char **key);
/* An hf tokenizer's BOS / EOS as the recipe sets them (tokenizer.bos /
 * tokenizer.eos over tokenizer_config.json's, which, naming a token the file
 * lacks, the recipe must override): 0, or RL_EXIT_USAGE with *blame the key at
 * fault ("tokenizer.bos", "tokenizer.eos"; NULL: the file at path). */
int recipe_tokenizer_specials(const recipe *r, tokenizer *t, const char *path, const char **blame, rl_err *e);
/* Whichever of data.prompts / data.task the recipe names (data.shuffle kept;
 * a task script runs under recipe_lua_limits). */
int recipe_prompts(const recipe *r, prompt_source **out, rl_err *e);

#endif

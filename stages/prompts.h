/* prompts.h — where the prompts of an iteration come from, and which ones.
 *
 *   prompt_source *src;
 *   if (prompts_open_jsonl(path, "prompt", NULL, &src, &e)) ...   // or recipe_prompts (runner/inputs.h)
 *   prompt_item *items;
 *   prompts_batch(src, seed, iteration, batch, &items, &e);   // items[i]: prompt i
 *   ... items[i].text, items[i].extra_json (for the reward hook) ...
 *   prompts_items_free(items, batch);  prompts_close(src);
 *
 * JSONL (data.prompts): one JSON object per line (blank lines are skipped;
 * line numbers count them; a UTF-8 BOM at the start is skipped, as in a YAML
 * recipe). The file is read as a stream, one line at a time. The prompt is the string field data.prompt_key
 * ("prompt"), not empty (a task's prompts neither: lua/host.h); every other field is kept, as a compact JSON object with
 * sorted keys, in extra_json — the Lua host puts each of them on the reward's
 * sample table. When data.answer_key is not "answer", its value is also
 * copied to the field "answer" (the reward reads sample.answer). Errors are
 * "FILE:LINE: what is wrong" (RL_EXIT_USAGE), "FILE:LINE:COL: not valid
 * JSON: …" for a line that does not parse. prompts_check_jsonl runs the same
 * parser over a whole file without keeping it (recipe validation: every bad
 * line reported, the prompts also checked against prompts_limits).
 *
 * The data cursor: iterations are numbered from 1 (as in the plan and the
 * store); prompt i of iteration k sits at position g = (k - 1)·B + i of an
 * endless stream, epoch E = g / N, offset o = g mod N (N prompts, B the
 * batch). Without shuffle it is prompt o; with shuffle it is prompt
 * perm(seed, E)(o), perm a bijection of [0, N) computed from a counter
 * (6-round Feistel over Philox4x32-10 with cycle walking, key (seed lo,
 * seed hi ^ "data"), epoch in the counter). So every prompt comes exactly
 * once per epoch, and a resumed run recomputes iteration k's prompts from
 * (seed, k, B, file) alone: nothing is saved, nothing skipped or repeated.
 *
 * Lua task (data.task): prompts(n, rng) called with n = B and the rng of
 * (seed, iteration) (lua/host.h), so iteration k's prompts are a pure
 * function of (seed, k, B, script). */
#ifndef RLRUN_PROMPTS_H
#define RLRUN_PROMPTS_H

#include <stdint.h>

#include "kernels/common.h"

struct luahost_limits;
struct tokenizer;
typedef struct prompt_source prompt_source;

typedef struct prompt_item {
  char *text;       /* the prompt */
  char *extra_json; /* compact JSON object with sorted keys ("{}" when none) */
  int64_t index;    /* JSONL: 0-based index of the prompt in the file; task: -1 */
  int64_t epoch;    /* JSONL: the epoch of this draw; task: 0 */
  int64_t line;     /* JSONL: the prompt's 1-based line in the file; task: 0 */
} prompt_item;

/* What a prompt must satisfy to run (recipe validation; every field optional). */
typedef struct prompts_limits {
  const struct tokenizer *tok; /* encode the texts with it (the recipe's tokenizer), or NULL: no token checks */
  int64_t max_prompt_tokens;   /* > 0 (RL): BOS + prompt tokens at most this (rollout.max_prompt_tokens) */
  int64_t max_seq_tokens;      /* > 0 (sft): BOS + prompt + target + EOS at most this (the model's positions) */
  const char *target_field;    /* sft: the string field every example needs ("completion"), or NULL */
  const char *tmpl;            /* data.prompt_template: the prompt is checked as put into it, or NULL */
} prompts_limits;

/* Check one prompt (its text and its other fields, a JSON object): 0, or
 * RL_EXIT_USAGE with what is wrong in e (no location: the caller adds it). */
int prompts_check_item(const prompts_limits *l, const char *text, const char *extra_json, rl_err *e);
/* Read a JSONL file in one pass with the parser of prompts_open_jsonl and
 * check every prompt against l (NULL: parse only). Calls bad(ud, msg) for
 * each bad line ("FILE:LINE[:COL]: what"), an unreadable file and a file
 * without prompts; returns how many times; *n_prompts (may be NULL) = the
 * prompts read. */
int64_t prompts_check_jsonl(const char *path, const char *prompt_key, const prompts_limits *l,
                            void (*bad)(void *ud, const char *msg), void *ud, int64_t *n_prompts);

/* A JSONL file. prompt_key NULL = "prompt", answer_key NULL = "answer". */
int prompts_open_jsonl(const char *path, const char *prompt_key, const char *answer_key,
                       prompt_source **out, rl_err *e);
/* A Lua task script defining prompts(n, rng); lim NULL = the host's defaults. */
int prompts_open_task(const char *path, const struct luahost_limits *lim, prompt_source **out, rl_err *e);
void prompts_close(prompt_source *s);

/* JSONL: the number of prompts in the file; task: -1 (unbounded). */
int64_t prompts_count(const prompt_source *s);
/* The file the source reads (data.prompts or data.task). */
const char *prompts_path(const prompt_source *s);
/* Shuffle JSONL prompts each epoch (default 1). */
void prompts_set_shuffle(prompt_source *s, int shuffle);
/* Put every prompt prompts_batch gives into tmpl (data.prompt_template: its
 * one "{prompt}" replaced by the prompt; NULL = the prompt as it is; copied). */
void prompts_set_template(prompt_source *s, const char *tmpl);
/* tmpl with its first "{prompt}" replaced by prompt (malloc'd); tmpl NULL: a copy of prompt. */
char *prompts_apply_template(const char *tmpl, const char *prompt);

/* The dataset index of position g for N prompts under (seed, shuffle). */
int64_t prompts_cursor_index(uint64_t seed, int shuffle, int64_t n, int64_t g);

/* The B prompts of iteration k (>= 1), out[i] = prompt i (malloc'd array). */
int prompts_batch(prompt_source *s, uint64_t seed, int64_t iteration, int64_t batch, prompt_item **out,
                  rl_err *e);
void prompts_items_free(prompt_item *v, int64_t n);

#endif

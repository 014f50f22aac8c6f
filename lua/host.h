/* host.h — the Lua 5.4 host: runs reward and task scripts in a sandbox.
 *
 * One luahost = one script in its own lua_State. The sandbox:
 *   - text chunks only (loaded with mode "t"; a precompiled file is refused); a
 *     UTF-8 BOM and a first line starting with '#' are skipped, as lua does;
 *   - an allow-listed environment: base functions assert error getmetatable ipairs
 *     next pairs pcall rawequal rawget rawlen rawset select setmetatable tonumber
 *     tostring type xpcall _G _VERSION (setmetatable refuses __gc: finalizers
 *     would run outside any call's limits), xpcall (its handler is not called for
 *     a limit error), plus print (to the host's log, every line prefixed, at most
 *     LUAHOST_PRINT_LINES lines per call and LUAHOST_PRINT_LINE_BYTES bytes per
 *     line) and collectgarbage (only "collect",
 *     "count", "step", "isrunning"); libraries string (without string.dump),
 *     table, math (math.random/randomseed raise an error: use the rng of
 *     prompts(n, rng)), utf8. No io, os, package, debug, coroutine, load,
 *     loadstring, dofile, loadfile, require, warn;
 *   - an instruction budget per call (count hook; every function call, a C
 *     function's too, counts as one more), a wall-clock deadline per call
 *     (checked in the same hook, and by the pattern matcher: see below),
 *     and a memory cap for the whole state (custom allocator: string.rep
 *     bombs fail there).
 * Errors name the script and line, and the sample: "rewards/exact.lua:12:
 * attempt to index a nil value (sample 3 of iteration 7)". A failed call
 * leaves the host usable; the state of the script (its globals) is the
 * script's own business — luahost_reset starts it afresh.
 *
 * Reward scripts: reward(sample) returns a number, or a table
 * {reward = number, <metric> = number|boolean, …}: the extra fields become
 * metrics (booleans as 1/0); a metric name is UTF-8 text without control
 * characters, whitespace, quotes, backslashes, commas or NULs (docs/recipes.md),
 * anything else an error naming it (escaped); "mean" and "std" are refused (the
 * run records reward/mean and reward/std itself). Optional reward_batch(samples) returns an array
 * of such results, one per sample. luahost_set_reward_function names another
 * function f (the recipe's reward.function): then f(sample) and the optional
 * f_batch(samples) are called instead. A sample table holds: prompt, completion,
 * tokens (array of integers), finish_reason, index (sample id within the
 * iteration), group (prompt index), iteration, and every field of the prompt's
 * extra JSON object (the JSONL line; the fields above win on a name clash).
 * Rewards and metrics must be finite, at most LUAHOST_MAX_REWARD in magnitude.
 *
 * Task scripts: prompts(n, rng) returns an array of n items, each a string
 * (the prompt) or a table {prompt = string, <field> = …}: the other fields
 * travel with the prompt as its extra JSON (e.g. answer, for the reward).
 * The prompt is not empty; the prompts and fields as copied out (a table or
 * string shared by several items counted once per item) fit the memory cap.
 * Their strings and keys must be UTF-8 without NUL bytes (a refusal names the
 * field: "field 'meta.tags[2]' of item 1 holds a NUL byte"). Error messages and
 * print() lines show a NUL of a Lua string as \0, newline and CR as \n and \r,
 * another control character but tab as \xNN (print() starts a line at \n).
 *
 * The rng (luahost_rng_*): Philox4x32-10 (Salmon et al., SC'11; the
 * constants of Random123) keyed by the run's seed, counter-based, so a
 * given (seed, iteration) always yields the same stream and nothing is saved:
 *   key     = (seed & 0xffffffff, (seed >> 32) ^ 0x7461736b)   ("task")
 *   draw k  = Philox4x32-10(counter = (k & 0xffffffff, k >> 32,
 *                                      iteration & 0xffffffff, iteration >> 32), key)
 *             → (x0, x1, x2, x3); u64_k = x0 | (uint64)x1 << 32; k = 0, 1, 2, …
 *   rng:float()    = (u64 >> 11) · 2^-53, in [0, 1)
 *   rng:int(a, b)  = a + (u64 mod r), r = b − a + 1, redrawing while
 *                    u64 ≥ 2^64 − (2^64 mod r) (no modulo bias); rng:int(n) = rng:int(1, n)
 * Each method call consumes draws in order; rng:draws() returns k so far.
 *
 * pairs() order over string keys is not stable across processes (Lua seeds
 * its string hash per state): scripts that need a reproducible order sort keys.
 *
 * Library calls: the count hook fires between VM instructions only, so the
 * sandbox's string.find/match/gmatch/gsub are rlrun's own (lua/pattern.c):
 * same results and errors as Lua's, their matching steps charged to the
 * budget and the deadline checked every few thousand steps, so a
 * backtracking pattern on a long subject stops like an endless loop.
 * table.move is charged its range (e − f + 1) up front: its C loop allocates
 * nothing when it moves nils, so table.move({}, 1, 1e11, 2) would have run
 * past the deadline; table.insert and table.remove (lua/host_lib.c) are
 * charged each element they move (a __len makes #t anything), and
 * string.rep('', n) is "" at once. The other C library loops are bounded by
 * the memory cap (string.rep, table.concat, table.sort of a table that fits)
 * or call a function per element (a table.sort comparator, an __index), where
 * the call hook fires.
 */
#ifndef RLRUN_LUA_HOST_H
#define RLRUN_LUA_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

#define LUAHOST_MAX_METRICS 16 /* extra numeric fields per reward result */
/* Largest |reward| (and |metric|) a script may return: ±1e308 rewards gave a
 * GRPO group the spread inf (advantages 0: the run learned nothing, silently,
 * with reward/std null), and ±1e37 under dr_grpo overflowed the FP32 gradient. */
#define LUAHOST_MAX_REWARD 1e30
#define LUAHOST_PRINT_LINES 32 /* print() lines per call before output is dropped */
#define LUAHOST_PRINT_LINE_BYTES 2000 /* bytes of one print() line shown; the rest is counted */
/* A value of a sample's extra JSON may sit inside at most this many objects and
 * arrays (the line's own object counts): the sample table is built by recursion.
 * stages/prompts.c refuses deeper JSONL lines when it reads them. */
#define LUAHOST_MAX_JSON_DEPTH 64

typedef struct luahost luahost;

typedef struct luahost_limits {
  int64_t instructions; /* VM instructions per call (reward_batch: × number of samples) */
  size_t memory_bytes;  /* the whole state's heap */
  double seconds;       /* wall-clock per call (reward_batch: × number of samples) */
} luahost_limits;
/* 100 M instructions, 64 MiB, 10 s. */
luahost_limits luahost_default_limits(void);

/* print() goes here (default: stderr, "[script] text"). */
typedef void (*luahost_log_fn)(void *ud, const char *script, const char *line);

/* Load and run a script file (its top level runs under the limits too).
 * `name` in messages is the path as given. lim NULL = defaults. Returns NULL
 * with e set (RL_EXIT_USAGE: unreadable file, syntax error, bytecode, an error
 * or a limit hit while running the top level). */
luahost *luahost_open(const char *path, const luahost_limits *lim, rl_err *e);
/* The same from text in memory; `name` is what messages call the script. */
luahost *luahost_open_string(const char *name, const char *src, size_t len,
                             const luahost_limits *lim, rl_err *e);
void luahost_close(luahost *h);
/* Throw away the script's state and load it again from the same text. */
int luahost_reset(luahost *h, rl_err *e);
void luahost_set_log(luahost *h, luahost_log_fn fn, void *ud);
/* 1 when the script defines a global function of this name. */
int luahost_has(luahost *h, const char *fn);
/* The global functions the script itself defines (Lua functions, not the
 * sandbox's), sorted, ", "-separated into buf ("" when none). */
void luahost_functions(luahost *h, char *buf, size_t n);
/* Longest reward function name (its batch form adds "_batch"). */
#define LUAHOST_MAX_FN 48
/* The reward function: name(sample), or name_batch(samples) when defined
 * (default "reward"). RL_EXIT_USAGE for a name that is not a Lua identifier
 * of at most LUAHOST_MAX_FN characters. */
int luahost_set_reward_function(luahost *h, const char *name, rl_err *e);
/* The reward function's name. */
const char *luahost_reward_function(const luahost *h);
/* Bytes the state holds now. */
size_t luahost_memory(luahost *h);

typedef struct luahost_sample {
  const char *prompt;
  const char *completion;
  const int32_t *tokens; int n_tokens;
  const char *finish_reason;  /* NULL → nil */
  int64_t index;              /* sample id within the iteration */
  int64_t group;              /* prompt index */
  int64_t iteration;
  const char *extra_json;     /* JSON object (the prompt's JSONL line) or NULL */
} luahost_sample;

typedef struct luahost_reward {
  double reward;
  int n_metrics;                          /* sorted by name */
  char names[LUAHOST_MAX_METRICS][64];
  double values[LUAHOST_MAX_METRICS];
} luahost_reward;

/* Score one sample with reward(sample) (or the function set above). Any
 * failure, a result of the wrong shape included, is RL_EXIT_FAIL: the reward
 * stage failed (fix the script, resume). More than LUAHOST_MAX_METRICS extra
 * fields are refused naming them in sorted order (pairs() order varies). */
int luahost_reward_one(luahost *h, const luahost_sample *s, luahost_reward *out, rl_err *e);
/* Score n samples: reward_batch(samples) when the script defines it, else
 * reward(sample) for each in order (or the function set above and its _batch). */
int luahost_reward_batch(luahost *h, const luahost_sample *s, int n, luahost_reward *out,
                         rl_err *e);

typedef struct luahost_prompt {
  char *prompt;
  char *extra_json; /* compact JSON object with sorted keys ("{}" when none) */
} luahost_prompt;
/* Generate n prompts with prompts(n, rng), rng seeded from (seed, iteration).
 * A result of the wrong shape (not an array of n items, an item without a
 * string prompt, a field JSON cannot hold) is bad input: RL_EXIT_USAGE; an
 * error the script raises, or a limit it hits, is RL_EXIT_FAIL (as a reward's). */
int luahost_prompts(luahost *h, int n, uint64_t seed, int64_t iteration, luahost_prompt **out,
                    rl_err *e);
void luahost_prompts_free(luahost_prompt *v, int n);

/* The rng of prompts(n, rng), for C callers and tests. */
typedef struct luahost_rng {
  uint64_t seed;
  int64_t iteration;
  uint64_t counter; /* draws so far */
} luahost_rng;
void luahost_rng_init(luahost_rng *r, uint64_t seed, int64_t iteration);
uint64_t luahost_rng_u64(luahost_rng *r);
double luahost_rng_float(luahost_rng *r);
/* Uniform integer in [a, b] (a <= b). */
int64_t luahost_rng_int(luahost_rng *r, int64_t a, int64_t b);
/* The Philox4x32-10 block function. */
void luahost_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

#endif

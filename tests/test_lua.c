/* test_lua.c — the Lua host: bundled scripts on hand-made samples, the task
 * rng (Philox known answers), and the sandbox: io/os, bytecode, endless loops
 * (budget and deadline), memory bombs, runtime errors — each stopped with a
 * message naming script, line and sample. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "lua/host.h"

/* A sample with only the fields the bundled rewards read. */
static luahost_sample mk(const char *completion, const char *extra) {
  luahost_sample s = {.prompt = "q", .completion = completion, .finish_reason = "stop",
                      .index = 3, .group = 1, .iteration = 7, .extra_json = extra};
  return s;
}

/* Reward of one sample (NaN and a failed check when the call fails). */
static double score(luahost *h, const char *completion, const char *extra, luahost_reward *r) {
  luahost_sample s = mk(completion, extra);
  rl_err e;
  if (luahost_reward_one(h, &s, r, &e)) {
    harness_fail(__FILE__, __LINE__, "reward failed: %s", e.msg);
    return NAN;
  }
  return r->reward;
}

/* Open a script from text; on failure returns NULL with e set. */
static luahost *src(const char *name, const char *text, const luahost_limits *lim, rl_err *e) {
  return luahost_open_string(name, text, strlen(text), lim, e);
}

/* Call reward on a default sample and return the exit code (message in e). */
static int call(luahost *h, rl_err *e) {
  luahost_sample s = mk("x", NULL);
  luahost_reward r;
  return luahost_reward_one(h, &s, &r, e);
}

/* ------------------------------------------------------------------ rng */

TEST(lua_philox_known_answers) {
  /* Random123 kat_vectors, philox4x32 10 rounds: counter, key → output. */
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1}};
  for (int i = 0; i < 3; i++) {
    uint32_t out[4];
    luahost_philox4x32(kat[i], kat[i] + 4, out);
    for (int k = 0; k < 4; k++) CHECK_EQ_U64(out[k], kat[i][6 + k]);
  }
  /* The documented stream: draw 0 of (seed 0, iteration 0) uses key (0, "task"). */
  luahost_rng r;
  luahost_rng_init(&r, 0, 0);
  uint32_t ctr[4] = {0, 0, 0, 0}, key[2] = {0, 0x7461736b}, x[4];
  luahost_philox4x32(ctr, key, x);
  CHECK_EQ_U64(luahost_rng_u64(&r), (uint64_t)x[0] | (uint64_t)x[1] << 32);
  CHECK_EQ_U64(r.counter, 1);
}

TEST(lua_rng_ranges_and_determinism) {
  luahost_rng a, b, c;
  luahost_rng_init(&a, 42, 5);
  luahost_rng_init(&b, 42, 5);
  luahost_rng_init(&c, 42, 6);
  int same = 1, differ = 0, hits[6] = {0};
  for (int i = 0; i < 6000; i++) {
    uint64_t x = luahost_rng_u64(&a), y = luahost_rng_u64(&b), z = luahost_rng_u64(&c);
    same &= x == y;
    differ += x != z;
  }
  CHECK(same);
  CHECK_EQ_I64(differ, 6000);
  double lo = 1, hi = 0;
  for (int i = 0; i < 6000; i++) {
    int64_t v = luahost_rng_int(&a, -2, 3);
    REQUIRE(v >= -2 && v <= 3);
    hits[v + 2]++;
    double f = luahost_rng_float(&a);
    lo = f < lo ? f : lo, hi = f > hi ? f : hi;
  }
  for (int k = 0; k < 6; k++) CHECK_MSG(hits[k] > 850 && hits[k] < 1150, "value %d hit %d times", k - 2, hits[k]);
  CHECK(lo >= 0 && lo < 0.01 && hi < 1 && hi > 0.99);
  CHECK_EQ_I64(luahost_rng_int(&a, 9, 9), 9);
  (void)luahost_rng_int(&a, INT64_MIN, INT64_MAX); /* full range: no division by zero */
}

/* ------------------------------------------------------------------ bundled scripts */

TEST(lua_script_exact_match) {
  rl_err e;
  luahost *h = luahost_open("lua/scripts/exact_match.lua", NULL, &e);
  REQUIRE(h);
  luahost_reward r;
  CHECK_NEAR(score(h, "I think <answer> 46 </answer>", "{\"answer\":\"46\"}", &r), 1.0, 0);
  REQUIRE(r.n_metrics == 1);
  CHECK_STREQ(r.names[0], "tagged");
  CHECK_NEAR(r.values[0], 1.0, 0);
  CHECK_NEAR(score(h, "46\n", "{\"answer\":46}", &r), 1.0, 0); /* numeric answer, untagged */
  CHECK_NEAR(r.values[0], 0.0, 0);
  CHECK_NEAR(score(h, "47", "{\"answer\":\"46\"}", &r), 0.0, 0);
  CHECK_NEAR(score(h, "<answer>1</answer> <answer>46</answer>", "{\"answer\":\"46\"}", &r), 1.0, 0);
  CHECK_NEAR(score(h, "46 apples", "{\"answer\":\"46\"}", &r), 0.0, 0);
  luahost_sample s = mk("46", NULL);
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "lua/scripts/exact_match.lua:23: sample has no field 'answer'");
  CHECK_CONTAINS(e.msg, "(sample 3 of iteration 7)");
  luahost_close(h);
}

TEST(lua_script_numeric_tolerance) {
  rl_err e;
  luahost *h = luahost_open("lua/scripts/numeric_tolerance.lua", NULL, &e);
  REQUIRE(h);
  luahost_reward r;
  CHECK_NEAR(score(h, "so x = 3.14159", "{\"answer\":3.14159}", &r), 1.0, 0);
  CHECK_NEAR(score(h, "first 7, then -12", "{\"answer\":\"-12\"}", &r), 1.0, 0);
  CHECK_NEAR(score(h, "total: 1,234.5 dollars", "{\"answer\":1234.5}", &r), 1.0, 0);
  CHECK_NEAR(score(h, "<answer>2.5e3</answer> (and 7 more)", "{\"answer\":2500}", &r), 1.0, 0);
  CHECK_NEAR(score(h, "3.1", "{\"answer\":3.14159}", &r), 0.0, 0);
  CHECK_NEAR(score(h, "3.1", "{\"answer\":3.14159,\"tolerance\":0.05}", &r), 1.0, 0);
  CHECK_NEAR(score(h, "1000001", "{\"answer\":1000000}", &r), 1.0, 0); /* relative 1e-6 */
  CHECK_NEAR(score(h, "1000003", "{\"answer\":1000000}", &r), 0.0, 0);
  CHECK_NEAR(score(h, "no idea", "{\"answer\":1}", &r), 0.0, 0);
  REQUIRE(r.n_metrics == 1);
  CHECK_STREQ(r.names[0], "parsed");
  CHECK_NEAR(r.values[0], 0.0, 0);
  luahost_close(h);
}

TEST(lua_script_format_check) {
  rl_err e;
  luahost *h = luahost_open("lua/scripts/format_check.lua", NULL, &e);
  REQUIRE(h);
  luahost_reward r;
  CHECK_NEAR(score(h, "<think>2+2</think>\n<answer>4</answer>\n", NULL, &r), 1.0, 0);
  CHECK_NEAR(r.values[0], 1.0, 0);
  CHECK_NEAR(score(h, "<answer>  </answer>", NULL, &r), 0.0, 0);
  CHECK_NEAR(score(h, "<answer>4</answer> and more", NULL, &r), 0.0, 0);
  CHECK_NEAR(score(h, "<answer>4</answer><answer>5</answer>", NULL, &r), 0.0, 0);
  CHECK_NEAR(r.values[0], 2.0, 0);
  CHECK_NEAR(score(h, "4", NULL, &r), 0.0, 0);
  luahost_close(h);
}

TEST(lua_script_task_arithmetic) {
  rl_err e;
  luahost *h = luahost_open("lua/scripts/task_arithmetic.lua", NULL, &e);
  REQUIRE(h);
  luahost_prompt *p, *q, *o;
  REQUIRE(luahost_prompts(h, 8, 1234, 3, &p, &e) == 0);
  for (int i = 0; i < 8; i++) {
    int a = -1, b = -1, ans = -1;
    CHECK_EQ_I64(sscanf(p[i].prompt, "%d+%d=", &a, &b), 2);
    CHECK(a >= 0 && a <= 99 && b >= 0 && b <= 99);
    CHECK_EQ_I64(sscanf(p[i].extra_json, "{\"answer\":\"%d\"}", &ans), 1);
    CHECK_EQ_I64(ans, a + b);
  }
  /* The first prompt follows the documented rng: two rng:int(0, 99) draws. */
  luahost_rng r;
  luahost_rng_init(&r, 1234, 3);
  char want[32];
  int64_t a0 = luahost_rng_int(&r, 0, 99), b0 = luahost_rng_int(&r, 0, 99);
  snprintf(want, sizeof want, "%lld+%lld=", (long long)a0, (long long)b0);
  CHECK_STREQ(p[0].prompt, want);
  /* Same (seed, iteration) → same prompts, from a fresh host too; another iteration differs. */
  luahost *h2 = luahost_open("lua/scripts/task_arithmetic.lua", NULL, &e);
  REQUIRE(h2);
  REQUIRE(luahost_prompts(h2, 8, 1234, 3, &q, &e) == 0);
  REQUIRE(luahost_prompts(h2, 8, 1234, 4, &o, &e) == 0);
  int same = 1, diff = 0;
  for (int i = 0; i < 8; i++) {
    same &= !strcmp(p[i].prompt, q[i].prompt);
    diff += strcmp(p[i].prompt, o[i].prompt) != 0;
  }
  CHECK(same);
  CHECK(diff >= 6);
  luahost_prompts_free(p, 8), luahost_prompts_free(q, 8), luahost_prompts_free(o, 8);
  luahost_close(h), luahost_close(h2);
}

/* ------------------------------------------------------------------ host behaviour */

TEST(lua_sample_fields_and_metrics) {
  rl_err e;
  const char *text =
      "function reward(s)\n"
      "  assert(s.prompt == 'p1' and s.completion == 'c1' and s.finish_reason == 'length')\n"
      "  assert(#s.tokens == 3 and s.tokens[3] == 30 and math.type(s.tokens[1]) == 'integer')\n"
      "  assert(s.index == 5 and s.group == 2 and s.iteration == 9)\n"
      "  assert(s.meta.level == 'hard' and s.list[2] == 'b' and s.weight == 0.5)\n"
      "  return {reward = s.weight * 2, zeta = 1, alpha = true, mid = 2.5}\n"
      "end\n";
  luahost *h = src("fields.lua", text, NULL, &e);
  REQUIRE(h);
  int32_t tok[3] = {10, 20, 30};
  luahost_sample s = {.prompt = "p1", .completion = "c1", .tokens = tok, .n_tokens = 3,
                      .finish_reason = "length", .index = 5, .group = 2, .iteration = 9,
                      .extra_json = "{\"meta\":{\"level\":\"hard\"},\"list\":[\"a\",\"b\"],"
                                    "\"weight\":0.5,\"prompt\":\"ignored\"}"};
  luahost_reward r;
  REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
  CHECK_NEAR(r.reward, 1.0, 0);
  REQUIRE(r.n_metrics == 3);
  CHECK_STREQ(r.names[0], "alpha");
  CHECK_NEAR(r.values[0], 1.0, 0);
  CHECK_STREQ(r.names[1], "mid");
  CHECK_NEAR(r.values[1], 2.5, 0);
  CHECK_STREQ(r.names[2], "zeta");
  s.extra_json = "[1,2]";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "extra fields of sample 5 of iteration 9 are not a JSON object");
  luahost_close(h);
}

TEST(lua_bad_results_are_reported) {
  rl_err e;
  const char *text = "\n"
                     "function reward(s)\n"
                     "  if s.completion == 'nil' then return nil end\n"
                     "  if s.completion == 'nan' then return 0/0 end\n"
                     "  if s.completion == 'str' then return {reward = 1, note = 'x'} end\n"
                     "  return {score = 1}\n"
                     "end\n";
  luahost *h = src("bad.lua", text, NULL, &e);
  REQUIRE(h);
  luahost_reward r;
  luahost_sample s = mk("nil", NULL);
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "bad.lua:2: reward(sample) returned nil; return a number or a table");
  CHECK_CONTAINS(e.msg, "(sample 3 of iteration 7)");
  s.completion = "nan";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "rewards must be finite");
  s.completion = "str";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "field 'note' = string; extra fields are metrics");
  s.completion = "other";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "field 'reward' is nil");
  luahost_close(h);
  h = src("none.lua", "x = 1\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(luahost_has(h, "reward"), 0);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "none.lua: defines no function reward(sample)");
  luahost_close(h);
}

TEST(lua_reward_batch_and_fallback) {
  rl_err e;
  luahost_sample s[3] = {mk("a", NULL), mk("bb", NULL), mk("ccc", NULL)};
  s[1].index = 4, s[2].index = 5;
  luahost_reward r[3];
  luahost *h = src("batch.lua",
                   "function reward_batch(ss)\n"
                   "  local out = {}\n"
                   "  for i, s in ipairs(ss) do out[i] = #s.completion * 10 + #ss end\n"
                   "  return out\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  REQUIRE(luahost_reward_batch(h, s, 3, r, &e) == 0);
  CHECK_NEAR(r[0].reward, 13, 0);
  CHECK_NEAR(r[2].reward, 33, 0);
  luahost_close(h);
  h = src("short.lua", "function reward_batch(ss) return {1} end\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(luahost_reward_batch(h, s, 3, r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "short.lua:1: reward_batch(samples) returned table of length 1 for 3 samples");
  CHECK_CONTAINS(e.msg, "(reward_batch over samples 3..5 of iteration 7)");
  luahost_close(h);
  h = src("one.lua", "function reward(s) return #s.completion end\n", NULL, &e);
  REQUIRE(h);
  REQUIRE(luahost_reward_batch(h, s, 3, r, &e) == 0);
  CHECK_NEAR(r[1].reward, 2, 0);
  luahost_close(h);
}

static void capture_log(void *ud, const char *script, const char *line) {
  char *buf = ud;
  size_t n = strlen(buf);
  if (n < 3000) snprintf(buf + n, 4096 - n, "[%s] %s\n", script, line);
}

TEST(lua_print_goes_to_log_and_is_bounded) {
  rl_err e;
  luahost *h = src("p.lua", "function reward(s)\n  for i = 1, 100 do print('line', i, nil) end\n"
                            "  return 0\nend\n", NULL, &e);
  REQUIRE(h);
  char buf[4096] = "";
  luahost_set_log(h, capture_log, buf);
  REQUIRE(call(h, &e) == 0);
  CHECK_CONTAINS(buf, "[p.lua] line\t1\tnil\n");
  CHECK_CONTAINS(buf, "[p.lua] line\t32\tnil\n[p.lua] (further print output of this call dropped)\n");
  CHECK(strstr(buf, "line\t33") == NULL);
  luahost_close(h);
}

/* ------------------------------------------------------------------ sandbox */

TEST(lua_sandbox_has_no_io_os_package_debug) {
  rl_err e;
  luahost *h = src("env.lua",
                   "function reward(s)\n"
                   "  local names = {'io','os','package','debug','coroutine','load','loadstring',\n"
                   "                 'dofile','loadfile','require','warn'}\n"
                   "  for _, n in ipairs(names) do assert(_G[n] == nil, n) end\n"
                   "  assert(string.dump == nil and ('').dump == nil)\n"
                   "  assert(type(string.rep) == 'function' and type(utf8.char) == 'function')\n"
                   "  assert(type(table.concat) == 'function' and math.pi > 3)\n"
                   "  assert(collectgarbage('count') > 0)\n"
                   "  assert(setmetatable({}, {__index = {a = 1}}).a == 1)\n"
                   "  return 1\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), 0);
  luahost_close(h);
  h = src("rewards/io.lua", "function reward(s)\n  local f = io.open('/etc/passwd')\n  return 1\nend\n",
          NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "rewards/io.lua:2: attempt to index a nil value (global 'io') (sample 3 of iteration 7)");
  luahost_close(h);
  /* At the top level: the script does not load. */
  h = src("os.lua", "\nos.execute('touch /tmp/rlrun-sandbox-escaped')\n", NULL, &e);
  CHECK(h == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "os.lua:2: attempt to index a nil value (global 'os') (while loading the script)");
  h = src("gc.lua", "function reward(s) collectgarbage('stop') return 1 end\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "gc.lua:1: collectgarbage(\"stop\") is not allowed");
  luahost_close(h);
  h = src("fin.lua", "function reward(s)\n  setmetatable({}, {__gc = function() while true do end end})\n"
                     "  return setmetatable({}, {__index = {reward = 2}}).reward\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "fin.lua:2: setmetatable: __gc metamethods are not allowed");
  luahost_close(h);
  h = src("rand.lua", "function reward(s)\n  return math.random()\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "rand.lua:2: math.random is disabled");
  luahost_close(h);
}

/* Writer for lua_dump into a growing buffer. */
struct dumpbuf {
  char data[8192];
  size_t n;
};
static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  struct dumpbuf *b = ud;
  if (b->n + sz > sizeof b->data) return 1;
  memcpy(b->data + b->n, p, sz);
  b->n += sz;
  return 0;
}

TEST(lua_sandbox_refuses_bytecode) {
  /* A real precompiled chunk, made with a plain (unsandboxed) state. */
  lua_State *L = luaL_newstate();
  REQUIRE(luaL_loadstring(L, "function reward(s) return 1 end") == LUA_OK);
  struct dumpbuf b = {.n = 0};
  REQUIRE(lua_dump(L, dump_writer, &b, 1) == 0);
  lua_close(L);
  REQUIRE(b.n > 4 && b.data[0] == 0x1b);
  rl_err e;
  luahost *h = luahost_open_string("rewards/compiled.luac", b.data, b.n, NULL, &e);
  CHECK(h == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "rewards/compiled.luac: attempt to load a binary chunk (mode is 't')");
  CHECK_CONTAINS(e.msg, "source text only");
  /* And from inside a script: no load, no string.dump. */
  h = src("dump.lua", "function reward(s)\n  local f = load(string.dump(reward))\n  return 1\nend\n",
          NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "dump.lua:2: attempt to call a nil value (field 'dump')");
  luahost_close(h);
}

TEST(lua_sandbox_instruction_budget_stops_loops) {
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = 2000000;
  luahost *h = src("loop.lua",
                   "function reward(s)\n"
                   "  if s.completion == 'pcall' then\n"
                   "    while true do pcall(function() while true do end end) end\n"
                   "  end\n"
                   "  local i = 0\n"
                   "  while true do i = i + 1 end\n"
                   "end\n", &lim, &e);
  REQUIRE(h);
  double t0 = rl_now();
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK(rl_now() - t0 < 2.0);
  CHECK_CONTAINS(e.msg, "loop.lua:6: instruction budget exceeded (2000000 instructions per call");
  CHECK_CONTAINS(e.msg, "(sample 3 of iteration 7)");
  /* A script that catches the limit error with pcall is still stopped. */
  luahost_sample s = mk("pcall", NULL);
  luahost_reward r;
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "loop.lua:3: instruction budget exceeded");
  luahost_close(h);
  /* An endless loop in the top level stops the load. */
  h = src("top.lua", "local x = 0\nrepeat x = x + 1 until false\n", &lim, &e);
  CHECK(h == NULL);
  CHECK_CONTAINS(e.msg, "top.lua:2: instruction budget exceeded");
}

TEST(lua_sandbox_deadline_stops_loops) {
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = (int64_t)1e15; /* budget out of reach: only the clock can stop it */
  lim.seconds = 0.2;
  luahost *h = src("slow.lua", "function reward(s)\n  while true do end\nend\n", &lim, &e);
  REQUIRE(h);
  double t0 = rl_now();
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  double dt = rl_now() - t0;
  CHECK_MSG(dt >= 0.2 && dt < 2.0, "stopped after %.3f s", dt);
  CHECK_CONTAINS(e.msg, "slow.lua:2: wall-clock deadline exceeded (0.2 s per call, reward.limits.timeout_ms) (sample 3 of iteration 7)");
  luahost_close(h);
}

TEST(lua_sandbox_memory_cap_stops_bombs) {
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.memory_bytes = 8u << 20;
  luahost *h = src("bomb.lua",
                   "function reward(s)\n"
                   "  if s.completion == 'rep' then\n"
                   "    local big = string.rep('x', 64 * 1024 * 1024)\n"
                   "  elseif s.completion == 'table' then\n"
                   "    local t = {}\n"
                   "    for i = 1, 1e9 do t[i] = i end\n"
                   "  elseif s.completion == 'doubling' then\n"
                   "    local s = 'x'\n"
                   "    while true do s = s .. s end\n"
                   "  end\n"
                   "  return 1\n"
                   "end\n", &lim, &e);
  REQUIRE(h);
  luahost_reward r;
  luahost_sample s = mk("rep", NULL);
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "bomb.lua:3: memory limit exceeded (8 MiB");
  CHECK_CONTAINS(e.msg, "(sample 3 of iteration 7)");
  s.completion = "table";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "bomb.lua:6: memory limit exceeded");
  s.completion = "doubling";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "bomb.lua:9: memory limit exceeded");
  CHECK_CONTAINS(e.msg, "reward.limits.memory_mb; a string.rep or table bomb, or endless recursion?)");
  /* The host survives: memory is back, the next sample scores. */
  CHECK(luahost_memory(h) < (2u << 20));
  s.completion = "fine";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), 0);
  CHECK_NEAR(r.reward, 1, 0);
  luahost_close(h);
}

TEST(lua_runtime_error_names_line_and_retry_after_fix) {
  rl_err e;
  const char *broken = "-- reward with a bug\n"
                       "function reward(s)\n"
                       "  local t = nil\n"
                       "  return t.x\n"
                       "end\n";
  luahost *h = src("rewards/exact.lua", broken, NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "rewards/exact.lua:4: attempt to index a nil value (local 't') (sample 3 of iteration 7)");
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL); /* the same host fails the same way again */
  CHECK_CONTAINS(e.msg, "rewards/exact.lua:4:");
  luahost_close(h);
  h = src("rewards/exact.lua", "function reward(s)\n  return 0.5\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), 0);
  luahost_close(h);
  /* Non-string error objects and error(msg, 0) still get a position. */
  h = src("obj.lua", "function reward(s)\n  if s.completion == 'x' then error({}) end\n"
                     "  if s.completion == 't' then error({code = 42}) end\n"
                     "  if s.completion == 'u' then error({'a\\nb', 1.5, true, {}, 5}) end\n"
                     "  if s.completion == 'k' then error({[string.rep('k', 3000)] = 1}) end\n"
                     "  error('plain', 0)\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "obj.lua:2: (error object is a table: {})");
  luahost_sample s = mk("t", NULL);
  luahost_reward r;
  /* a table's first entries are shown (error({code = 42}) said only "a table value") */
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "obj.lua:3: (error object is a table: {code = 42}) (sample 3 of iteration 7)");
  s.completion = "u";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "obj.lua:4: (error object is a table: {[1] = \"a\\nb\", [2] = 1.5, [3] = true, [4] = table, …})");
  s.completion = "k"; /* a long key is cut as a value is (it overran a Lua buffer: a use after free) */
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "obj.lua:5: (error object is a table: {kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk… = 1})");
  s.completion = "y";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "obj.lua:6: plain (sample 3 of iteration 7)");
  luahost_close(h);
  /* Syntax errors name the line; a missing file says so. */
  h = src("syn.lua", "function reward(s)\n  return 1 +\nend\n", NULL, &e);
  CHECK(h == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "syn.lua:3: unexpected symbol near 'end'");
  h = luahost_open("lua/scripts/does_not_exist.lua", NULL, &e);
  CHECK(h == NULL);
  CHECK_CONTAINS(e.msg, "does_not_exist.lua: cannot open");
}

TEST(lua_reset_discards_script_state) {
  rl_err e;
  luahost *h = src("count.lua", "n = 0\nfunction reward(s) n = n + 1 return n end\n", NULL, &e);
  REQUIRE(h);
  luahost_reward r;
  luahost_sample s = mk("x", NULL);
  REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
  REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
  CHECK_NEAR(r.reward, 2, 0);
  REQUIRE(luahost_reset(h, &e) == 0);
  REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
  CHECK_NEAR(r.reward, 1, 0);
  luahost_close(h);
}

/* prompts() items nest as deep as JSONL lines may (LUAHOST_MAX_JSON_DEPTH
 * levels, the item counted as the line's object is): 63 tables inside the item
 * travel, 64 are refused (it was 32 for task scripts, 64 for files). */
TEST(lua_prompts_nest_as_deep_as_jsonl) {
  for (int depth = LUAHOST_MAX_JSON_DEPTH - 1; depth <= LUAHOST_MAX_JSON_DEPTH; depth++) {
    char code[512];
    snprintf(code, sizeof code,
             "function prompts(n, rng)\n"
             "  local out = {}\n"
             "  for i = 1, n do\n"
             "    local t = 1\n"
             "    for d = 1, %d do t = {t} end\n"
             "    out[i] = {prompt = 'p' .. i, m = t}\n"
             "  end\n"
             "  return out\n"
             "end\n", depth);
    rl_err e;
    luahost *h = src("deep.lua", code, NULL, &e);
    REQUIRE(h);
    luahost_prompt *p = NULL;
    int rc = luahost_prompts(h, 1, 7, 1, &p, &e);
    if (depth < LUAHOST_MAX_JSON_DEPTH) {
      CHECK_EQ_I64(rc, 0);
      if (!rc) {
        int d = 0;
        for (const char *c = p[0].extra_json; *c; c++) d += *c == '[';
        CHECK_EQ_I64(d, depth);
        luahost_prompts_free(p, 1);
      }
    } else {
      CHECK_EQ_I64(rc, RL_EXIT_USAGE);
      CHECK_CONTAINS(e.msg, "is nested deeper than 64 levels, the item counted");
    }
    luahost_close(h);
  }
}

TEST(lua_prompts_results_are_checked) {
  rl_err e;
  luahost *h = src("task.lua",
                   "function prompts(n, rng)\n"
                   "  local out = {}\n"
                   "  for i = 1, n do\n"
                   "    if i == 2 then out[i] = 'plain ' .. rng:int(5)\n"
                   "    else out[i] = {prompt = 'p' .. i, answer = i * 2, tags = {'a', 'b'},\n"
                   "                   meta = {z = 1, a = 0.5}} end\n"
                   "  end\n"
                   "  if n == 3 then out[3] = {answer = 1} end\n"
                   "  if n == 4 then out[4].bad = print end\n"
                   "  if n == 5 then return {} end\n"
                   "  if n == 6 then return 42 end\n"
                   "  assert(getmetatable(rng) == false)\n"
                   "  return out\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  luahost_prompt *p;
  REQUIRE(luahost_prompts(h, 2, 7, 1, &p, &e) == 0);
  CHECK_STREQ(p[0].prompt, "p1");
  CHECK_STREQ(p[0].extra_json, "{\"answer\":2,\"meta\":{\"a\":0.5,\"z\":1},\"tags\":[\"a\",\"b\"]}");
  CHECK_EQ_I64(strncmp(p[1].prompt, "plain ", 6), 0);
  CHECK_STREQ(p[1].extra_json, "{}");
  luahost_prompts_free(p, 2);
  /* a result of the wrong shape is bad input (exit 2, as a bad JSONL line) */
  CHECK_EQ_I64(luahost_prompts(h, 3, 7, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "task.lua:1: prompts(n, rng) item 3 has no string field 'prompt' (prompts for iteration 1)");
  CHECK_EQ_I64(luahost_prompts(h, 4, 7, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "task.lua:1: prompts(n, rng): field 'bad' of item 4 is a function: only strings, numbers, "
                     "booleans and tables can travel with a prompt (prompts for iteration 1)");
  CHECK_EQ_I64(luahost_prompts(h, 5, 7, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "returned table of length 0 for n = 5");
  CHECK(p == NULL);
  CHECK_EQ_I64(luahost_prompts(h, 6, 7, 1, &p, &e), RL_EXIT_USAGE); /* was "number of length 0" */
  CHECK_STREQ(e.msg, "task.lua:1: prompts(n, rng) returned a number, not a table, for n = 6; return an array of n "
                     "prompts (prompts for iteration 1)");
  luahost_close(h);
  /* an error the script raises is a failing stage (exit 1), as in a reward; the
   * flag of an earlier bad result does not carry over */
  h = src("err.lua", "function prompts(n, rng)\n  if n == 1 then return {} end\n  error('no data today')\nend\n",
          NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(luahost_prompts(h, 1, 7, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(luahost_prompts(h, 2, 7, 1, &p, &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "err.lua:3: no data today (prompts for iteration 1)");
  luahost_close(h);
}

/* More than LUAHOST_MAX_METRICS extra fields: the message lists them sorted,
 * the same in every Lua state (pairs() order differs from state to state), and
 * the first bad field in sorted order is the one named. */
TEST(lua_too_many_metrics_message_is_deterministic) {
  rl_err e;
  const char *text = "function reward(s)\n"
                     "  if s.completion == 'types' then return {reward = 1, zz = 'x', bb = {}, aa = 1} end\n"
                     "  local t = {reward = 1}\n"
                     "  for i = 20, 1, -1 do t[string.format('k%02d', i)] = i end\n"
                     "  return t\n"
                     "end\n";
  const char *want = "many.lua:1: reward(sample) returned 20 metrics besides reward, more than 16: k01, k02, k03, "
                     "k04, k05, k06, k07, k08, k09, k10, k11, k12, k13, k14, k15, k16, k17, k18, k19, k20 "
                     "(sample 3 of iteration 7)";
  for (int round = 0; round < 8; round++) {
    luahost *h = src("many.lua", text, NULL, &e);
    REQUIRE(h);
    CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
    CHECK_STREQ(e.msg, want);
    luahost_sample s = mk("types", NULL);
    luahost_reward r;
    CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
    CHECK_STREQ(e.msg, "many.lua:1: reward(sample) returned field 'bb' = table; extra fields are metrics and "
                       "must be numbers or booleans (sample 3 of iteration 7)");
    luahost_close(h);
  }
}

/* reward.function: the host calls the named function (and its _batch form),
 * refuses a name that is not a Lua name, and names a function that is missing. */
TEST(lua_named_reward_function) {
  rl_err e;
  luahost_sample s[2] = {mk("a", NULL), mk("bb", NULL)};
  s[1].index = 4;
  luahost_reward r[2];
  luahost *h = src("named.lua",
                   "function score(s) return #s.completion end\n"
                   "function reward(s) return -1 end\n"
                   "local function helper() end\n", NULL, &e);
  REQUIRE(h);
  char fns[256];
  luahost_functions(h, fns, sizeof fns);
  CHECK_STREQ(fns, "reward, score"); /* the script's own global functions, sorted */
  CHECK_STREQ(luahost_reward_function(h), "reward");
  REQUIRE(luahost_set_reward_function(h, "score", &e) == 0);
  CHECK_STREQ(luahost_reward_function(h), "score");
  REQUIRE(luahost_reward_batch(h, s, 2, r, &e) == 0);
  CHECK_NEAR(r[0].reward, 1, 0);
  CHECK_NEAR(r[1].reward, 2, 0);
  CHECK_EQ_I64(luahost_set_reward_function(h, "2x", &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "named.lua: reward function '2x' is not a Lua function name (letters, digits and '_', "
                     "not starting with a digit, at most 48 characters)");
  CHECK_STREQ(luahost_reward_function(h), "score"); /* unchanged */
  REQUIRE(luahost_reset(h, &e) == 0);               /* the name survives a reset */
  REQUIRE(luahost_reward_one(h, &s[1], &r[0], &e) == 0);
  CHECK_NEAR(r[0].reward, 2, 0);
  REQUIRE(luahost_set_reward_function(h, "rewrd", &e) == 0);
  CHECK_EQ_I64(luahost_reward_one(h, &s[0], &r[0], &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "named.lua: defines no function rewrd(sample), the function the recipe's reward.function "
                     "names (sample 3 of iteration 7)");
  /* a builtin of the sandbox is not the script's function (it was called, and blamed on line -1) */
  REQUIRE(luahost_set_reward_function(h, "print", &e) == 0);
  CHECK_EQ_I64(luahost_has(h, "print"), 0);
  CHECK_EQ_I64(luahost_reward_one(h, &s[0], &r[0], &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "named.lua: defines no function print(sample), the function the recipe's reward.function "
                     "names (sample 3 of iteration 7)");
  luahost_close(h);
  /* name_batch(samples) scores the whole batch; reward_batch is not called */
  h = src("nb.lua",
          "function score_batch(ss) local o = {} for i in ipairs(ss) do o[i] = 10 * i end return o end\n"
          "function reward_batch(ss) error('not me') end\n", NULL, &e);
  REQUIRE(h);
  REQUIRE(luahost_set_reward_function(h, "score", &e) == 0);
  REQUIRE(luahost_reward_batch(h, s, 2, r, &e) == 0);
  CHECK_NEAR(r[0].reward, 10, 0);
  CHECK_NEAR(r[1].reward, 20, 0);
  luahost_close(h);
  /* no function of its own */
  h = src("none.lua", "local x = 1\n", NULL, &e);
  REQUIRE(h);
  luahost_functions(h, fns, sizeof fns);
  CHECK_STREQ(fns, "");
  luahost_close(h);
}

/* Metric names print as they are in `rlrun metrics` (table, CSV, JSON): a name
 * with a control character, whitespace, a quote, a backslash, a comma, a NUL
 * or bytes that are not UTF-8 is refused, the message naming script, sample and
 * the name (escaped); other UTF-8 text is a name. */
TEST(lua_metric_names_are_checked) {
  rl_err e;
  luahost *h = src("names.lua",
                   "local bad = {nl = 'm/1\\n\\xff', sp = 'a b', q = 'say\"hi', sq = \"it's\", bs = 'a\\\\b',\n"
                   "             comma = 'a,b', nul = 'a\\0b', empty = '', nbsp = 'a\\u{a0}b', tab = 'a\\tb',\n"
                   "             c1 = 'a\\u{85}b', utf = '\\xc3\\x28'}\n"
                   "function reward(s)\n"
                   "  if s.completion == 'ok' then return {reward = 1, ['\\u{e9}lan/ok_1'] = 2, ['x.y-z:w'] = true} end\n"
                   "  return {reward = 1, [bad[s.completion]] = 1}\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  static const struct { const char *case_, *shown, *why; } cases[] = {
      {"nl", "m/1\\n\\xFF", "holds a control character"}, /* the first problem is named */
      {"sp", "a b", "holds whitespace"},
      {"q", "say\"hi", "holds a quote"},
      {"sq", "it\\'s", "holds a quote"},
      {"bs", "a\\\\b", "holds a backslash"},
      {"comma", "a,b", "holds a comma"},
      {"nul", "a\\x00b", "holds a NUL byte"},
      {"empty", "", "is empty"},
      {"nbsp", "a\xc2\xa0" "b", "holds whitespace"},
      {"tab", "a\\tb", "holds a control character"},
      {"c1", "a\\u0085b", "holds a control character"},
      {"utf", "\\xC3(", "is not valid UTF-8"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    luahost_sample smp = mk(cases[i].case_, NULL);
    luahost_reward r;
    char want[600];
    snprintf(want, sizeof want, "names.lua:4: reward(sample) returned metric name '%s', which %s: a metric name is "
             "UTF-8 text without control characters, whitespace, quotes, backslashes or commas (e.g. format_ok, "
             "digits/exact) (sample 3 of iteration 7)", cases[i].shown, cases[i].why);
    CHECK_EQ_I64(luahost_reward_one(h, &smp, &r, &e), RL_EXIT_FAIL);
    CHECK_STREQ(e.msg, want);
  }
  luahost_sample ok = mk("ok", NULL);
  luahost_reward r;
  REQUIRE(luahost_reward_one(h, &ok, &r, &e) == 0);
  REQUIRE(r.n_metrics == 2);
  CHECK_STREQ(r.names[0], "x.y-z:w");
  CHECK_STREQ(r.names[1], "\xc3\xa9lan/ok_1");
  luahost_close(h);
}

/* "mean" and "std" would be the metrics reward/mean and reward/std, which the
 * run records itself: the script's values were dropped without a word. They
 * are refused, as other bad names are; "means" or "std_len" are names. */
TEST(lua_metric_names_mean_and_std_are_the_runs) {
  rl_err e;
  luahost *h = src("ms.lua",
                   "function reward(s)\n"
                   "  if s.completion == 'ok' then return {reward = 1, means = 2, std_len = 3} end\n"
                   "  return {reward = 1, [s.completion] = 7, other = 1}\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  const char *names[] = {"mean", "std"};
  for (int i = 0; i < 2; i++) {
    luahost_sample smp = mk(names[i], NULL);
    luahost_reward r;
    char want[600];
    snprintf(want, sizeof want, "ms.lua:1: reward(sample) returned metric '%s': reward/mean and reward/std are "
             "rlrun's own (the rewards' mean and standard deviation); give it another name (e.g. %s_len) (sample 3 "
             "of iteration 7)", names[i], names[i]);
    CHECK_EQ_I64(luahost_reward_one(h, &smp, &r, &e), RL_EXIT_FAIL);
    CHECK_STREQ(e.msg, want);
  }
  luahost_sample ok = mk("ok", NULL);
  luahost_reward r;
  REQUIRE(luahost_reward_one(h, &ok, &r, &e) == 0);
  REQUIRE(r.n_metrics == 2);
  CHECK_STREQ(r.names[0], "means");
  CHECK_STREQ(r.names[1], "std_len");
  luahost_close(h);
}

/* A task's empty prompt is refused (as a JSONL file's is), a string item and
 * a table's prompt field alike: exit 2 at validation or mid-run. */
TEST(lua_task_empty_prompt_refused) {
  rl_err e;
  luahost *h = src("task.lua",
                   "function prompts(n, rng)\n"
                   "  if n == 1 then return {''} end\n"
                   "  if n == 2 then return {'1+1=', {prompt = '', answer = '2'}} end\n"
                   "  local t = {} for i = 1, n do t[i] = ' ' end return t\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  luahost_prompt *p = NULL;
  CHECK_EQ_I64(luahost_prompts(h, 1, 7, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "task.lua:1: prompts(n, rng) item 1: the prompt is empty: a prompt is the text the model "
                     "continues (prompts for iteration 1)");
  CHECK(p == NULL);
  CHECK_EQ_I64(luahost_prompts(h, 2, 7, 3, &p, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "task.lua:1: prompts(n, rng): field 'prompt' of item 2 is empty: a prompt is the text the "
                     "model continues (prompts for iteration 3)");
  CHECK_EQ_I64(luahost_prompts(h, 3, 7, 1, &p, &e), 0); /* a space is text */
  if (p) CHECK_STREQ(p[2].prompt, " ");
  luahost_prompts_free(p, 3);
  luahost_close(h);
}

/* Lua strings may hold NUL bytes, C strings may not: a prompt or a field of a
 * task's item with a NUL is refused (naming the field), a metric name with a
 * NUL is not taken for the part before it, and an error message shows its NULs
 * as \0 instead of ending there. A field that is not UTF-8 is named too. */
TEST(lua_nul_bytes_are_refused_or_shown) {
  rl_err e;
  luahost *h = src("task.lua",
                   "function prompts(n, rng)\n"
                   "  if n == 1 then return {'1+\\0='} end\n"
                   "  if n == 2 then return {{prompt = '1+\\0=', answer = '2'}, 'x'} end\n"
                   "  if n == 3 then return {'a', 'b', {prompt = '1+1=', answer = '2\\0'}} end\n"
                   "  if n == 4 then return {{prompt = 'p', answer = '\\xff'}, 'b', 'c', 'd'} end\n"
                   "  if n == 5 then return {{prompt = 'p', meta = {tags = {'x', 'y\\0'}}}, 'b', 'c', 'd', 'e'} end\n"
                   "  return {{prompt = 'p', ['k\\0ey'] = 1}, 'b', 'c', 'd', 'e', 'f'}\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  static const char *const want[] = {
      "task.lua:1: prompts(n, rng) item 1: the prompt holds a NUL byte (byte 3): prompts are text without NUL",
      "task.lua:1: prompts(n, rng): field 'prompt' of item 1 holds a NUL byte (byte 3): prompts are text without NUL",
      "task.lua:1: prompts(n, rng): field 'answer' of item 3 holds a NUL byte (byte 2): text must not contain NUL",
      "task.lua:1: prompts(n, rng): field 'answer' of item 1 is not valid UTF-8 text",
      "task.lua:1: prompts(n, rng): field 'meta.tags[2]' of item 1 holds a NUL byte (byte 2): text must not "
      "contain NUL",
      "task.lua:1: prompts(n, rng): item 1 has a key with a NUL byte ('k\\x00ey'): keys are text without NUL",
  };
  for (int n = 1; n <= 6; n++) {
    luahost_prompt *p = NULL;
    char w[400];
    snprintf(w, sizeof w, "%s (prompts for iteration 1)", want[n - 1]);
    CHECK_EQ_I64(luahost_prompts(h, n, 7, 1, &p, &e), RL_EXIT_USAGE);
    CHECK_STREQ(e.msg, w);
    CHECK(p == NULL);
  }
  luahost_close(h);
  h = src("r.lua",
          "function reward(s)\n"
          "  if s.completion == 'err' then error('bad\\0hidden') end\n"
          "  if s.completion == 'print' then print('a\\0b') return 0 end\n"
          "  return {reward = 1, ['a\\0b'] = 1}\n"
          "end\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "r.lua:1: reward(sample) returned metric name 'a\\x00b', which holds a NUL byte: a metric name "
                     "is UTF-8 text without control characters, whitespace, quotes, backslashes or commas (e.g. "
                     "format_ok, digits/exact) (sample 3 of iteration 7)");
  luahost_sample s = mk("err", NULL);
  luahost_reward r;
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "r.lua:2: bad\\0hidden (sample 3 of iteration 7)");
  char buf[4096] = "";
  luahost_set_log(h, capture_log, buf);
  s.completion = "print";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), 0);
  CHECK_STREQ(buf, "[r.lua] a\\0b\n");
  luahost_close(h);
}

/* ------------------------------------------------------------------ C loops, xpcall, print */

/* reward(sample) with the given completion in a child process that is killed
 * after `secs`: a call that never returns fails the test instead of hanging
 * it. Returns the call's exit code and message (e), or -1 ("did not return"). */
static int call_within(luahost *h, const char *completion, double secs, rl_err *e) {
  int fd[2];
  if (pipe(fd)) return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    alarm((unsigned)ceil(secs));
    luahost_sample s = mk(completion, NULL);
    luahost_reward r;
    rl_err ce = {0};
    ce.code = luahost_reward_one(h, &s, &r, &ce);
    if (write(fd[1], &ce, sizeof ce) != (ssize_t)sizeof ce) _exit(1);
    _exit(0);
  }
  close(fd[1]);
  size_t got = 0;
  ssize_t k;
  while (got < sizeof *e && (k = read(fd[0], (char *)e + got, sizeof *e - got)) > 0) got += (size_t)k;
  close(fd[0]);
  int st;
  waitpid(pid, &st, 0);
  if (got != sizeof *e) {
    snprintf(e->msg, sizeof e->msg, "reward(sample) for '%s' did not return within %g s", completion, secs);
    return e->code = -1;
  }
  return e->code;
}

TEST(lua_sandbox_c_library_loops_stop) {
  /* Library loops in C where no VM instruction runs and nothing is allocated:
   * the count hook and the memory cap never stopped them (each one hung). */
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = 2000000;
  lim.seconds = 5;
  luahost *h = src("cloop.lua",
                   "local huge = setmetatable({}, {__len = function() return math.maxinteger // 2 end})\n"
                   "local rawish = setmetatable({}, {__len = function() return 2^31 - 2 end, __index = rawlen,\n"
                   "                                 __newindex = rawlen})\n"
                   "function reward(s)\n"
                   "  local c = s.completion\n"
                   "  if c == 'rep' then return #string.rep('', math.maxinteger) + #(''):rep(1e15, '') end\n"
                   "  if c == 'insert' then table.insert(huge, 1, 'x') end\n"
                   "  if c == 'remove' then table.remove(huge, 1) end\n"
                   "  if c == 'sort' then table.sort(rawish) end\n"
                   "  if c == 'concat' then return #table.concat(rawish, '', 1, 4e8) end\n"
                   "  if c == 'ok' then\n"
                   "    local t = {1, 2, 3}\n"
                   "    table.insert(t, 1, 0)\n"
                   "    table.insert(t, 9)\n"
                   "    local r = table.remove(t, 2)\n"
                   "    return r * 1000 + #t * 100 + t[1] * 10 + t[4]\n"
                   "  end\n"
                   "  return -1\n"
                   "end\n", &lim, &e);
  REQUIRE(h);
  /* An empty string repeated is "" at once (the stock rep looped 2^63 times). */
  luahost_reward r;
  luahost_sample s = mk("rep", NULL);
  CHECK_EQ_I64(call_within(h, "rep", 10, &e), 0);
  if (e.code == 0) {
    REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
    CHECK_NEAR(r.reward, 0, 0);
  }
  /* insert/remove charge each element moved: the budget stops them. */
  CHECK_EQ_I64(call_within(h, "insert", 10, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "cloop.lua:7: instruction budget exceeded (2000000 instructions per call");
  CHECK_EQ_I64(call_within(h, "remove", 10, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "cloop.lua:8: instruction budget exceeded");
  /* A C function called per element (here rawlen as __index) counts as a call. */
  CHECK_EQ_I64(call_within(h, "sort", 10, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "cloop.lua:9: instruction budget exceeded");
  CHECK_EQ_I64(call_within(h, "concat", 10, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "cloop.lua:10: instruction budget exceeded");
  /* The replacements do what the stock ones do. */
  s.completion = "ok";
  REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
  CHECK_NEAR(r.reward, 1 * 1000 + 4 * 100 + 0 * 10 + 9, 0);
  luahost_close(h);
}

TEST(lua_sandbox_deadline_holds_in_collectgarbage_loops) {
  /* collectgarbage() is C work of the whole heap with a handful of
   * instructions per loop turn: the clock, read every 1000 instructions, was
   * read every ~200 collections — seconds past the deadline. */
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = (int64_t)1e15;
  lim.seconds = 0.3;
  lim.memory_bytes = 256u << 20;
  luahost *h = src("gc.lua",
                   "keep = {}\n"
                   "function reward(s)\n"
                   "  for i = 1, 300000 do keep[i] = {i} end\n"
                   "  for i = 1, 1e9 do collectgarbage() end\n"
                   "end\n", &lim, &e);
  REQUIRE(h);
  double t0 = rl_now();
  CHECK_EQ_I64(call_within(h, "x", 30, &e), RL_EXIT_FAIL);
  double dt = rl_now() - t0;
  CHECK_CONTAINS(e.msg, "gc.lua:4: wall-clock deadline exceeded (0.3 s per call, reward.limits.timeout_ms)");
  CHECK_MSG(dt < 1.0, "stopped after %.2f s, deadline 0.3 s", dt);
  luahost_close(h);
}

TEST(lua_sandbox_xpcall_handler_cannot_outlive_a_limit) {
  /* Lua calls xpcall's handler for a limit error with hooks switched off: a
   * handler that loops ran forever. It is not called for a limit error now. */
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = 2000000;
  lim.seconds = 5;
  luahost *h = src("xp.lua",
                   "function reward(s)\n"
                   "  if s.completion == 'loop' then\n"
                   "    xpcall(function() while true do end end, function(m) while true do end end)\n"
                   "  end\n"
                   "  local ok, m = xpcall(function(a, b) error('bad ' .. a .. b) end,\n"
                   "                       function(m) return 'H:' .. m end, 'x', 'y')\n"
                   "  assert(not ok and m == 'H:xp.lua:5: bad xy', m)\n"
                   "  local ok2, a, b = xpcall(function(...) return ... end, print, 1, 2)\n"
                   "  assert(ok2 and a == 1 and b == 2)\n"
                   "  local ok3, m3 = xpcall(error, function(m) error('again') end, 'z')\n"
                   "  assert(not ok3 and m3 == 'error in error handling', m3)\n"
                   "  return 1\n"
                   "end\n", &lim, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call_within(h, "loop", 10, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "xp.lua:3: instruction budget exceeded (2000000 instructions per call");
  CHECK_EQ_I64(call_within(h, "plain", 10, &e), 0);
  luahost_close(h);
}

TEST(lua_print_lines_are_prefixed_counted_and_escaped) {
  rl_err e;
  luahost *h = src("pl.lua",
                   "function reward(s)\n"
                   "  if s.completion == 'many' then print(('x\\n'):rep(40)) return 0 end\n"
                   "  print('a\\nrlrun: run complete', '\\27[2Jred\\r', 'tab\\there\\0')\n"
                   "  print(('y'):rep(5000))\n"
                   "  return 0\n"
                   "end\n", NULL, &e);
  REQUIRE(h);
  char buf[4096] = "";
  luahost_set_log(h, capture_log, buf);
  REQUIRE(call(h, &e) == 0);
  /* Each line carries the prefix; control characters but tab are escaped. */
  CHECK_CONTAINS(buf, "[pl.lua] a\n[pl.lua] rlrun: run complete\t\\x1B[2Jred\\r\ttab\there\\0\n");
  /* A long line is cut, with the count of what was left out. */
  CHECK_CONTAINS(buf, "yyy\xe2\x80\xa6 (3000 more bytes)\n");
  buf[0] = 0;
  luahost_sample s = mk("many", NULL);
  luahost_reward r;
  REQUIRE(luahost_reward_one(h, &s, &r, &e) == 0);
  /* One print of 40 lines: 32 shown, then the note. */
  int lines = 0;
  for (const char *p = buf; (p = strstr(p, "[pl.lua] x\n")); p++) lines++;
  CHECK_EQ_I64(lines, 32);
  CHECK_CONTAINS(buf, "[pl.lua] x\n[pl.lua] (further print output of this call dropped)\n");
  luahost_close(h);
}

TEST(lua_error_messages_escape_control_characters) {
  /* A newline in an error message started a line of rlrun's output that the
   * script wrote ("rlrun: run complete …"), and ESC reached the terminal. */
  rl_err e;
  luahost *h = src("en.lua", "function reward(s)\n  error('bad\\nrlrun: run complete\\27[1m\\r\\0\\tx')\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "en.lua:2: bad\\nrlrun: run complete\\x1B[1m\\r\\0\tx (sample 3 of iteration 7)");
  luahost_close(h);
}

TEST(lua_script_may_start_with_bom_and_shebang) {
  /* The lua command skips both; rlrun refused them ("unexpected symbol near '#'"). */
  rl_err e;
  luahost *h = src("sb.lua", "\xef\xbb\xbf#!/usr/bin/env lua\nfunction reward(s)\n  error('here')\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "sb.lua:3: here"); /* line numbers stay the file's */
  luahost_close(h);
  h = src("sb2.lua", "#!lua", NULL, &e);
  REQUIRE(h);
  luahost_close(h);
  /* Only the first line: a later '#' is still a syntax error. */
  h = src("sb3.lua", "#!lua\n#x\n", NULL, &e);
  CHECK(h == NULL);
  CHECK_CONTAINS(e.msg, "sb3.lua:2: unexpected symbol near '#'");
}

TEST(lua_huge_rewards_are_refused) {
  /* ±1e308 is finite, but a GRPO group's spread was inf: advantages 0, nothing
   * learned, reward/std null, no error. */
  rl_err e;
  luahost *h = src("big.lua", "function reward(s)\n  if s.completion == 'm' then return {reward = 1, len = -1e31} end\n"
                              "  if s.completion == 'ok' then return {reward = -1e30, len = 1e30} end\n"
                              "  return 1e308\nend\n", NULL, &e);
  REQUIRE(h);
  CHECK_EQ_I64(call(h, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "big.lua:1: reward(sample) returned reward 1e+308; rewards must be finite numbers of "
                        "magnitude at most 1e+30");
  luahost_sample s = mk("m", NULL);
  luahost_reward r;
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "returned metric 'len' = -1e+31; metrics must be finite numbers of magnitude at most 1e+30");
  { /* 0/0 (negative NaN on x86) reads "nan", not "-nan" */
    rl_err en;
    luahost *hn = src("nan.lua", "function reward(s) return 0/0 end\n", NULL, &en);
    REQUIRE(hn);
    CHECK_EQ_I64(call(hn, &en), RL_EXIT_FAIL);
    CHECK_CONTAINS(en.msg, "nan.lua:1: reward(sample) returned reward nan; rewards must be finite numbers");
    luahost_close(hn);
  }
  s.completion = "ok";
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), 0);
  CHECK_NEAR(r.reward, -1e30, 0);
  luahost_close(h);
}

TEST(lua_prompts_shared_tables_count_per_item) {
  /* One table (or string) returned for many items is one object in Lua but a
   * copy per item in C and in every sample stored: a 3 MB table shared by the
   * items of a demo run wrote 1.8 GB of state in two iterations, and a table
   * holding one 2000 times exhausted the host's memory. Their written-out size
   * is charged against the script's memory cap. */
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.memory_bytes = 8u << 20;
  luahost *h = src("share.lua",
                   "local big = {}\n"
                   "for i = 1, 20000 do big[i] = 'abcdefghij' .. i end\n"
                   "local deep = {}\n"
                   "for i = 1, 2000 do deep[i] = big end\n"
                   "local p = ('1'):rep(2 * 1024 * 1024)\n"
                   "function prompts(n, rng)\n"
                   "  local out = {}\n"
                   "  for i = 1, n do\n"
                   "    if n == 1 then out[i] = {prompt = 'x', meta = deep}\n"
                   "    elseif n == 2 then out[i] = {prompt = 'x', small = {1, 2, 3}}\n"
                   "    elseif n == 8 then out[i] = {prompt = 'x', meta = big}\n"
                   "    else out[i] = p end\n"
                   "  end\n"
                   "  return out\n"
                   "end\n", &lim, &e);
  REQUIRE(h);
  luahost_prompt *p = NULL;
  double t0 = rl_now();
  CHECK_EQ_I64(luahost_prompts(h, 1, 1, 1, &p, &e), RL_EXIT_USAGE);
  CHECK(rl_now() - t0 < 5);
  CHECK_CONTAINS(e.msg, "share.lua:6: prompts(n, rng): field 'meta[");
  CHECK_CONTAINS(e.msg, "of item 1 takes the fields of the prompts past 8 MiB as JSON, the script's memory cap");
  CHECK_EQ_I64(luahost_prompts(h, 8, 1, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "of item 6 takes the fields of the prompts past 8 MiB as JSON");
  CHECK_EQ_I64(luahost_prompts(h, 5, 1, 1, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "share.lua:6: prompts(n, rng): the prompt of item 4 takes the prompts past 8 MiB");
  /* Ordinary fields pass. */
  REQUIRE(luahost_prompts(h, 2, 1, 1, &p, &e) == 0);
  CHECK_STREQ(p[1].extra_json, "{\"small\":[1,2,3]}");
  luahost_prompts_free(p, 2);
  luahost_close(h);
}

/* fuzz_lua.c — libFuzzer target for the Lua sandbox: any byte string is a
 * candidate reward script (text or not). Loading and one reward call under
 * tight limits must end in a score or an error value that names the script;
 * never a crash, a panic, a leak, or a call that outlives its limits.
 *
 *   make fuzz && build-fuzz/fuzz_lua -runs=200000 -max_len=512 -timeout=5 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lua/host.h"

static void quiet(void *ud, const char *script, const char *line) {
  (void)ud, (void)script, (void)line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  luahost_limits lim = {.instructions = 200000, .memory_bytes = 4u << 20, .seconds = 1.0};
  rl_err e;
  luahost *h = luahost_open_string("fuzz.lua", (const char *)data, size, &lim, &e);
  if (!h) {
    if (!strstr(e.msg, "fuzz.lua")) abort(); /* every error names the script */
    return 0;
  }
  luahost_set_log(h, quiet, NULL);
  int32_t tok[2] = {1, 2};
  luahost_sample s = {.prompt = "p", .completion = "c", .tokens = tok, .n_tokens = 2,
                      .finish_reason = "stop", .index = 1, .group = 0, .iteration = 2,
                      .extra_json = "{\"answer\":\"c\",\"n\":[1,2.5,{\"k\":null}]}"};
  luahost_reward r;
  double t0 = rl_now();
  if (luahost_reward_one(h, &s, &r, &e) != 0 && !strstr(e.msg, "(sample 1 of iteration 2)"))
    abort(); /* every call error names the sample */
  if (rl_now() - t0 > 3 * lim.seconds + 1) abort();
  if (luahost_memory(h) > lim.memory_bytes) abort();
  luahost_close(h);
  return 0;
}

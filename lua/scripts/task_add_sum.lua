-- task_add_sum.lua — one-digit addition "a+b=" with a and b in 0..9: 100
-- facts, sums 0..18; the answer (field `answer`, a string) is the sum in
-- decimal. Harder than task_add_digits.lua (25 facts, one-digit sums): the
-- units digit of a two-digit sum is a fact of its own to find by sampling, so
-- a fresh model climbs for ~150 iterations instead of ~80. Pair it with
-- numeric_closeness.lua (partial credit for near misses: the reward moves
-- from the first iterations) — the GPU learning runs (recipes/learn-*.yaml).
--
-- prompts(n, rng) is deterministic: two rng:int draws per prompt from rlrun's
-- counter-based generator seeded by (seed, iteration).

local MAX = 9

function prompts(n, rng)
  local out = {}
  for i = 1, n do
    local a = rng:int(0, MAX)
    local b = rng:int(0, MAX)
    out[i] = {prompt = string.format("%d+%d=", a, b), answer = tostring(a + b)}
  end
  return out
end

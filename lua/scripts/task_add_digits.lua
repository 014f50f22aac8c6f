-- task_add_digits.lua — one-digit addition "a+b=" (a, b in 0..MAX = 4), the answer
-- (field `answer`, a string) is the sum in decimal. Small enough that a
-- freshly initialised 2-layer model learns it with RL on two CPU cores in a
-- minute (recipes/demo-cpu.yaml); pair it with digit_match.lua.
--
-- prompts(n, rng) is deterministic: two rng:int draws per prompt from rlrun's
-- counter-based generator seeded by (seed, iteration).

local MAX = 4

function prompts(n, rng)
  local out = {}
  for i = 1, n do
    local a = rng:int(0, MAX)
    local b = rng:int(0, MAX)
    out[i] = {prompt = string.format("%d+%d=", a, b), answer = tostring(a + b)}
  end
  return out
end

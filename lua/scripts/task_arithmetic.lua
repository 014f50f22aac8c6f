-- task_arithmetic.lua — a task small enough for a tiny model on the CPU:
-- two-operand addition "a+b=" with a, b in [0, MAX_OPERAND]; the expected
-- answer (field `answer`, a string) is the sum in decimal. Pair it with
-- exact_match.lua or numeric_tolerance.lua.
--
-- prompts(n, rng) is deterministic: rng is rlrun's counter-based generator
-- seeded from (seed, iteration), and each prompt takes two rng:int draws.

local MAX_OPERAND = 99

function prompts(n, rng)
  local out = {}
  for i = 1, n do
    local a = rng:int(0, MAX_OPERAND)
    local b = rng:int(0, MAX_OPERAND)
    out[i] = {prompt = string.format("%d+%d=", a, b), answer = tostring(a + b)}
  end
  return out
end

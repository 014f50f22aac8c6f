-- numeric_closeness.lua — partial credit for a numeric answer by its distance
-- to the expected one, so that a model starting from random weights gets a
-- signal before it is ever exactly right:
--   reward = 0.5 · max(0, 1 − |got − want| / scale)
--          + 0.5 · (1 when got == want)
-- got is the integer the completion starts with (after leading whitespace);
-- a completion that does not start with a digit gets 0. want is
-- tonumber(sample.answer); scale is sample.scale when the prompt gives one,
-- else 10 (an answer off by 10 or more earns nothing).
-- Why not per-digit credit (digit_match.lua): for sums of two digits, GRPO's
-- one advantage per sequence lets the easy tens digit ("1" when the sum is at
-- least 10) drown the units digit, whose sampling entropy collapses before it
-- is learned; the distance gives the units digit its own gradient.
-- Metrics: exact = 1 on an exact match; parsed = 1 when a number was read;
-- abs_err = |got − want| (only over the samples that gave a number).

function reward(sample)
  local want = tonumber(sample.answer)
  if want == nil then
    error("sample field 'answer' is missing or not a number: " .. tostring(sample.answer))
  end
  local scale = tonumber(sample.scale) or 10
  if scale <= 0 then error("sample field 'scale' must be positive, got " .. tostring(sample.scale)) end
  local digits = sample.completion:match("^%s*(%d+)")
  if digits == nil then return {reward = 0.0, exact = false, parsed = false} end
  local got = tonumber(digits)
  local err = math.abs(got - want)
  local r = 0.5 * math.max(0.0, 1.0 - err / scale) + (err == 0 and 0.5 or 0.0)
  return {reward = r, exact = err == 0, parsed = true, abs_err = err}
end

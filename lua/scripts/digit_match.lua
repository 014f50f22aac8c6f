-- digit_match.lua — partial credit for a numeric answer, so that a model
-- starting from random weights gets a signal to climb:
--   reward = 0.5 · (fraction of the expected answer's characters that the
--            completion has at the same position)
--          + 0.5 · (1 when the whole trimmed completion equals the answer)
-- The expected answer is the prompt's field `answer`.
-- Metrics: exact = 1 on an exact match; length_ok = 1 when the completion has
-- the answer's length.

local function trim(s)
  return (s:match("^%s*(.-)%s*$"))
end

function reward(sample)
  local want = sample.answer
  if want == nil then
    error("sample has no field 'answer' (add it to the prompt's JSONL line or task script)")
  end
  want = trim(tostring(want))
  local got = trim(sample.completion)
  local same = 0
  for i = 1, #want do
    if got:sub(i, i) == want:sub(i, i) then same = same + 1 end
  end
  local exact = got == want
  local r = 0.5 * same / math.max(#want, #got, 1) + (exact and 0.5 or 0.0)
  return {reward = r, exact = exact, length_ok = #got == #want}
end

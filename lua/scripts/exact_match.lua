-- exact_match.lua — reward 1 when the model's answer equals the expected one.
--
-- The answer is the text inside the last <answer>…</answer> of the completion,
-- or the whole completion when it has no such tag; both sides are compared
-- after trimming surrounding whitespace. The expected answer is the prompt's
-- field `answer` (a string or a number, from the JSONL line or a task script).
-- Metric: tagged = 1 when the completion used an <answer> tag.

local function trim(s)
  return (s:match("^%s*(.-)%s*$"))
end

-- The text of the last <answer>…</answer>, or nil.
local function tagged_answer(text)
  local last
  for inner in text:gmatch("<answer>(.-)</answer>") do last = inner end
  return last
end

function reward(sample)
  local want = sample.answer
  if want == nil then
    error("sample has no field 'answer' (add it to the prompt's JSONL line or task script)")
  end
  local tagged = tagged_answer(sample.completion)
  local got = trim(tagged or sample.completion)
  return {reward = (got == trim(tostring(want))) and 1.0 or 0.0, tagged = tagged ~= nil}
end

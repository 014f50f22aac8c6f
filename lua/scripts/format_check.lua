-- format_check.lua — reward 1 when the completion ends with exactly one
-- non-empty <answer>…</answer> block (anything may come before it, e.g. a
-- <think>…</think> section; only whitespace after it). Otherwise 0.
-- Metric: answer_tags = how many <answer> tags the completion opened.

function reward(sample)
  local c = sample.completion
  local opens = select(2, c:gsub("<answer>", ""))
  local closes = select(2, c:gsub("</answer>", ""))
  local inner, rest = c:match("<answer>(.-)</answer>(.*)$")
  local ok = opens == 1 and closes == 1 and inner ~= nil and inner:find("%S") ~= nil
      and rest:find("^%s*$") ~= nil
  return {reward = ok and 1.0 or 0.0, answer_tags = opens}
end

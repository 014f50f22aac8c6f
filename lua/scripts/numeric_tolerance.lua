-- numeric_tolerance.lua — reward 1 when the last number of the answer is
-- within tolerance of the expected value.
--
-- The answer is the text inside the last <answer>…</answer>, or the whole
-- completion. Its last number is read ("42", "-3.5", "1,234.5", "2.5e3";
-- thousands separators are dropped). It matches when
--   |got − want| <= tolerance · max(1, |want|)
-- with want = tonumber(sample.answer) and tolerance = sample.tolerance or 1e-6.
-- Metric: parsed = 1 when a number was found.

local function tagged_answer(text)
  local last
  for inner in text:gmatch("<answer>(.-)</answer>") do last = inner end
  return last
end

-- The last number in s, or nil.
local function last_number(s)
  local last, pos = nil, 1
  while true do
    local a, b = s:find("[-+]?%d[%d,]*%.?%d*", pos)
    if not a then break end
    local ea, eb = s:find("^[eE][-+]?%d+", b + 1)
    if ea then b = eb end
    local v = tonumber((s:sub(a, b):gsub(",", "")))
    if v then last = v end
    pos = b + 1
  end
  return last
end

function reward(sample)
  local want = tonumber(sample.answer)
  if want == nil then
    error("sample field 'answer' is missing or not a number: " .. tostring(sample.answer))
  end
  local tol = tonumber(sample.tolerance) or 1e-6
  local got = last_number(tagged_answer(sample.completion) or sample.completion)
  local ok = got ~= nil and math.abs(got - want) <= tol * math.max(1.0, math.abs(want))
  return {reward = ok and 1.0 or 0.0, parsed = got ~= nil}
end

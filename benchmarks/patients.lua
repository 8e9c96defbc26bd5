-- wrk script: POST a different patient's request each time, each with a hookInstance of its
-- own. Arguments: a folder of body-<n>.json files (each holding HOOK-INSTANCE-HERE where its
-- hookInstance goes), how many there are, and the path to POST to.
local heads, tails = {}, {}
local count, path, sent, thread_id = 0, "/", 0, 0
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

init = function(args)
  count, path = tonumber(args[2]), args[3]
  for n = 0, count - 1 do
    local file = assert(io.open(args[1] .. "/body-" .. n .. ".json", "rb"))
    local body = file:read("*a")
    file:close()
    local at = assert(string.find(body, "HOOK-INSTANCE-HERE", 1, true))
    heads[n] = string.sub(body, 1, at - 1)
    tails[n] = string.sub(body, at + string.len("HOOK-INSTANCE-HERE"))
  end
end

request = function()
  local n = sent % count
  sent = sent + 1
  local instance = string.format("bench%02d-%012d", thread_id, sent)
  return wrk.format("POST", path, {["Content-Type"] = "application/json"},
    heads[n] .. instance .. tails[n])
end

-- wrk script: POST the JSON file named by the first script argument to the given path.
local request_bytes

init = function(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  request_bytes = wrk.format("POST", args[2], {["Content-Type"] = "application/json"}, body)
end

request = function()
  return request_bytes
end

-- wrk script of the collector benchmark (bench/collector.py):
--   wrk -s bench/wrk.lua URL -- POST FILE PATH   each line of FILE is a request body for PATH
--   wrk -s bench/wrk.lua URL -- GET FILE         each line is "PATH" or "PATH<TAB>COOKIE"
-- Lines are used in turn, so requests carry different cookies, events and tokens.
-- At the end one line "BENCH_JSON {...}" holds the counts and latency percentiles (µs).

local method, lines, path = "GET", {}, "/"
local index = 0
local user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
  .. "Chrome/126.0.0.0 Safari/537.36"

function init(args)
  method = args[1]
  path = args[3] or "/"
  for line in io.lines(args[2]) do
    lines[#lines + 1] = line
  end
  -- threads start at different lines
  index = math.random(#lines) - 1
end

function request()
  index = index % #lines + 1
  local line = lines[index]
  if method == "POST" then
    return wrk.format("POST", path, {
      ["Content-Type"] = "text/plain;charset=UTF-8",
      ["User-Agent"] = user_agent,
    }, line)
  end
  local target, cookie = line:match("^([^\t]*)\t?(.*)$")
  local headers = { ["User-Agent"] = user_agent }
  if cookie ~= "" then
    headers["Cookie"] = cookie
  end
  return wrk.format("GET", target, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end

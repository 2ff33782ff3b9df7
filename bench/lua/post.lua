-- POSTs for wrk: the same body every time, or a unique one per request.
-- Arguments (after `--`): body file, "same" or "unique", a run nonce.
-- In "unique" mode the body's @@ID@@ is replaced by nonce-thread-counter,
-- so every request is a cache miss. done() prints one JSON line.

local threads_started = 0
counter = 0
tid = 0

function setup(thread)
  threads_started = threads_started + 1
  thread:set("tid", threads_started)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  template = file:read("*a")
  file:close()
  unique = args[2] == "unique"
  nonce = args[3] or "0"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  fixed = wrk.format(nil, nil, nil, template)
end

function request()
  if not unique then
    return fixed
  end
  counter = counter + 1
  local tag = nonce .. "-" .. tid .. "-" .. counter
  local body = string.gsub(template, "@@ID@@", tag)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

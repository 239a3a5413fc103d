-- wrk script: POSTs signed recording callbacks, each with a distinct file_id
-- (so none is a duplicate), and prints one machine-readable summary line.
-- BENCH_T and BENCH_SIGN: a valid (t, sign) pair (sign covers only t, so one
-- pair signs every body); BENCH_PREFIX keeps file ids distinct across runs.
-- BENCH_PORTS (optional, "port,port,..."): wrk thread i sends to 127.0.0.1 at
-- the (i mod n)-th port, so one wrk run splits its connections evenly between
-- several servers and reports one latency distribution over all of them.

local t = os.getenv("BENCH_T")
local sign = os.getenv("BENCH_SIGN")
local prefix = os.getenv("BENCH_PREFIX") or "bench"
local ports = {}
for port in string.gmatch(os.getenv("BENCH_PORTS") or "", "%d+") do
  table.insert(ports, port)
end
local threads = {}
local counter = 0

function setup(thread)
  if #ports > 0 then
    thread.addr = wrk.lookup("127.0.0.1", ports[#threads % #ports + 1])[1]
  end
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local template = '{"event_type":100,"appid":12345678,"app":"push.example.com",' ..
  '"appname":"live","stream_id":"bench_stream","channel_id":"bench_stream",' ..
  '"file_id":"%s-%d-%d","record_file_id":"%s-%d-%d","file_format":"mp4",' ..
  '"task_id":"","start_time":1642089445,"end_time":1642089598,' ..
  '"start_time_usec":316441,"end_time_usec":618577,"duration":154,' ..
  '"file_size":277941079,"stream_param":"stream_param=test",' ..
  '"video_url":"http://12345678.vod2.myqcloud.com/xxxx/yyyy/zzzz.mp4",' ..
  '"media_start_time":135802,"record_bps":0,' ..
  '"callback_ext":"{\\"video_codec\\":\\"h264\\",\\"resolution\\":\\"640x480\\"}",' ..
  '"sign":"%s","t":%s}'

local headers = { ["Content-Type"] = "application/json" }

function request()
  counter = counter + 1
  local body = string.format(template, prefix, thread_id, counter, prefix, thread_id, counter, sign, t)
  return wrk.format("POST", "/callback", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    "BENCH requests=%d duration_us=%d non2xx=%d socket_errors=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

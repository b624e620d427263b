-- wrk script (wrk -s benchmarks/latency.lua): prints the latency percentiles wrk's --latency
-- leaves out, in one line that wrk.py parses. latency:percentile(p) and latency.max are in µs,
-- from the same histogram as wrk's own Latency Distribution block. It defines no request() or
-- response(), so wrk still sends its static request and does not hand responses to Lua.
done = function(summary, latency, requests)
  io.write(string.format("latency.lua: p99 %.0fus p99.9 %.0fus p99.99 %.0fus max %.0fus\n",
    latency:percentile(99), latency:percentile(99.9), latency:percentile(99.99), latency.max))
end

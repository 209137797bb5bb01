-- wrk script for the metadata-database benchmark (benches/db/bench.py):
-- each request GETs the next hosted path listed in the file named by
-- $BENCH_KEYS (one per line), round robin, so a run spreads over thousands
-- of distinct keys and every one is a memory miss with the cache off.
local file = os.getenv("BENCH_KEYS")
local paths = {}
for line in io.lines(file) do
  if #line > 0 then paths[#paths + 1] = line end
end
if #paths == 0 then error("no paths in " .. tostring(file)) end
local i = math.random(#paths)

request = function()
  i = i + 1
  if i > #paths then i = 1 end
  return wrk.format("GET", paths[i])
end

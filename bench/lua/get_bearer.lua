-- GET the URL given on the wrk command line with `Authorization: Bearer $API_KEY` (the /v1 API).
-- env: BENCH_LUA_DIR (dir of report.lua), API_KEY (an rc-... key)
dofile((os.getenv("BENCH_LUA_DIR") or "lua") .. "/report.lua")
local key = os.getenv("API_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

-- The baseline of issue #17: sysbench's own OLTP transactions, written by the client to the
-- source and then to the destination itself -- the double write cutover does in src_first,
-- without cutover.
--
--   DW_WORKLOAD=oltp_write_only DW_SRC_PORT=3306 DW_DST_PORT=3307 \
--     sysbench scripts/lib/bench/double_write.lua --mysql-host=127.0.0.1 \
--       --mysql-port=3306,3307 … run
--
-- DW_WORKLOAD names the stock script (oltp_write_only or oltp_read_write) whose
-- prepare_statements() and event() run unchanged: only the connection is replaced by a
-- pair. sysbench 1.0 cannot open a connection to a chosen port (drv:connect() takes the next
-- host:port of --mysql-port round-robin, shared by all threads), so each thread connects
-- until it holds one connection to each port (asked with SELECT @@port).
--
-- The order and commit points are cutover's in src_first (README, "How a statement flows"):
--   * a SELECT goes to the source only;
--   * BEGIN, every write and COMMIT go to the source, then to the destination, each waiting
--     for its answer (cutover pipelines the writes inside a transaction; this client waits,
--     which only makes the baseline slower);
--   * the destination's share of a transaction is complete before COMMIT reaches the source;
--     COMMIT reaches the destination after the source committed;
--   * a statement that fails on the source (deadlock victim) rolls the destination's share
--     back, as cutover does; one that fails only on the destination rolls both back and the
--     event restarts (sysbench counts it as an ignored error) -- cutover would retry it.

local workload = os.getenv("DW_WORKLOAD") or "oltp_write_only"
local src_port = tonumber(os.getenv("DW_SRC_PORT") or "")
local dst_port = tonumber(os.getenv("DW_DST_PORT") or "")
dofile("/usr/share/sysbench/" .. workload .. ".lua")

-- A parameter bound on both statements: the same value goes to both sides.
local Pair = {}
Pair.__index = Pair
function Pair:set(v)
   self.s:set(v)
   self.d:set(v)
end
function Pair:set_rand_str(fmt)
   local v = sysbench.rand.string(fmt)
   self.s:set(v)
   self.d:set(v)
end

-- A prepared write on both sides.
local Both = {}
Both.__index = Both
function Both:bind_create(btype, len)
   return setmetatable({ s = self.s:bind_create(btype, len), d = self.d:bind_create(btype, len) }, Pair)
end
function Both:bind_param(...)
   local s, d = {}, {}
   for i, p in ipairs({ ... }) do
      s[i], d[i] = p.s, p.d
   end
   self.s:bind_param(unpack(s))
   self.d:bind_param(unpack(d))
end
function Both:execute()
   local ok, err = pcall(self.s.execute, self.s)
   if not ok then
      self.pair.dst:query("ROLLBACK")
      error(err, 0)
   end
   ok, err = pcall(self.d.execute, self.d)
   if not ok then
      self.pair.src:query("ROLLBACK")
      error(err, 0)
   end
end
function Both:close()
   self.s:close()
   self.d:close()
end

-- The connection pair the stock script sees as `con`.
local Conn = {}
Conn.__index = Conn
function Conn:prepare(sql)
   if sql:match("^%s*[Ss][Ee][Ll][Ee][Cc][Tt]") then
      return self.src:prepare(sql)
   end
   return setmetatable({ s = self.src:prepare(sql), d = self.dst:prepare(sql), pair = self }, Both)
end
function Conn:query(sql)
   self.src:query(sql)
   return self.dst:query(sql)
end
function Conn:disconnect()
   self.src:disconnect()
   self.dst:disconnect()
end

local function connect_pair(drv)
   if not (src_port and dst_port) then
      error("double_write.lua: set DW_SRC_PORT and DW_DST_PORT")
   end
   local src, dst, spare = nil, nil, {}
   for _ = 1, 64 do
      local c = drv:connect()
      local port = tonumber(c:query_row("SELECT @@port"))
      if port == src_port and src == nil then
         src = c
      elseif port == dst_port and dst == nil then
         dst = c
      else
         spare[#spare + 1] = c
      end
      if src and dst then
         break
      end
   end
   for _, c in ipairs(spare) do
      c:disconnect()
   end
   if not (src and dst) then
      error("double_write.lua: no connection to both ports " .. src_port .. " and " .. dst_port)
   end
   return setmetatable({ src = src, dst = dst }, Conn)
end

function thread_init()
   drv = sysbench.sql.driver()
   con = connect_pair(drv)
   stmt = {}
   param = {}
   for t = 1, sysbench.opt.tables do
      stmt[t] = {}
      param[t] = {}
   end
   prepare_statements()
end

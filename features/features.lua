#!lua flags=allow-cross-slot-keys
--[[
features.lua: update and read one micro-batch of feature events, atomically, in one call.

Called by features/redis_store.py as EVALSHA <sha> 1 <epoch key of the call's first shard>
<config> <batch>, both cjson documents (see RedisFeatureStore for their fields and
the key layout). One call covers some of the namespace's 16 shards (on a cluster: those of
one node; the shebang's flag lets one call touch several slots of its node): the events
with an entity value in those shards, each entity's columns computed here. The rules are those of
features/semantics.py and features/reference.py, written the same way: the same integer
bucket arithmetic and the same float operations in the same order, so both stores read
bit-identical numbers.

Per batch: each entity's state (one cmsgpack string: watermark, per aggregation a flat
array of its buckets, see slot(), and per count_distinct its newest window's union, see
distinct()) is read once with GET, changed in Lua tables, trimmed to the retention floor
and written back once with SET PX; count_distinct buckets hold HyperLogLog registers in the
state, or past a size are real HyperLogLog keys (PFADD/PFCOUNT). Per event Lua keeps a
cached "window minus own bucket" per aggregation,
so a busy entity costs O(1) per event, not O(buckets). Returns {rows, flags, epoch}: rows is n*k
little-endian float64 (Lua numbers returned as replies would be truncated to integers),
flags one byte per event (1 = late, 2 = replayed), epoch the state's (false unguarded); or
{'lost', reason} when the state is lost (see the guard), having changed nothing. Columns of
entities that are not in the call's shards hold their empty value (the caller takes them
from the call of their own shard).

Idempotency is per (shard, source partition): its high-water (highest offset applied) and
replay records (per event and entity field, that entity's columns and its late bit), packed
back to back in one string per 1024 offsets: one APPEND per call, not a hash field each.
Every call sets the high-water of each of its shards to the batch's highest offset of each
partition (`m`), so every shard's high-water covers every batch the workers delivered.
]]

local cfg = cjson.decode(ARGV[1])
local batch = cjson.decode(ARGV[2])

local null = cjson.null
local floor = math.floor
local fmt = string.format
local call = redis.call

local SP = cfg.sp -- per shard (1-based) its key prefix 'sf:<ns>:{<tag>}:'
local lateness = cfg.lateness
local aggs = cfg.aggs
local ents = cfg.ents
local k = #aggs
local n_ents = #ents
-- Per entity field: the pack format of its columns, and where they lie in a row when they
-- are contiguous there (then a replay record is a substring of the row, no second pack).
for f = 1, n_ents do
  local ids = ents[f].aggs
  ents[f].fmt = '<' .. string.rep('d', #ids)
  local contiguous = true
  for j = 2, #ids do contiguous = contiguous and ids[j] == ids[j - 1] + 1 end
  if contiguous then ents[f].lo, ents[f].hi = ids[1] * 8 - 7, ids[#ids] * 8 end
end
local row_fmt = '<' .. string.rep('d', k)
local flag_char = { [0] = '\0', '\1', '\2', '\3' }

local times = batch.t
local n = #times
local E, X, D, R = batch.e, batch.x, batch.d, batch.r
local S, O, P = batch.s, batch.o, batch.p
local H = batch.h -- per entity field, per event: its value's shard (1-based), 0 when null
local CS = batch.cs -- the call's shards (1-based)
local HOME = {} -- events without any entity value: their replay flag is shard 1's
if batch.hm then for _, i in ipairs(batch.hm) do HOME[i] = true end end

-- Kept from the layout with one tag per entity: '%' and '}' stay escaped in key names.
local function escape(v)
  if string.find(v, '[%%}]') then
    v = string.gsub(v, '%%', '%%25')
    v = string.gsub(v, '}', '%%7D')
  end
  return v
end

-- loaded[f][value] = { tag, st = { w = watermark, a = { [agg id] = state },
--                      u = { [agg id] = count_distinct window union, see distinct() }
--                      (only once a count_distinct made one) }, dirty, ttl,
--                      prefix = per aggregation, its window without the newest bucket,
--                      dis = per count_distinct id its bookkeeping, see distinct() }
-- Tables are made only where needed: a script's cost is mostly Lua's, allocation included.
local loaded = {}
for f = 1, n_ents do loaded[f] = {} end

local function entity(f, v, sh)
  local e = loaded[f][v]
  if e then return e end
  local tag = SP[sh] .. ents[f].tag .. '=' .. escape(v)
  local blob = call('GET', tag .. ':s')
  local st
  if blob then st = cmsgpack.unpack(blob) else st = { a = {} } end
  local a = st.a
  local ids = ents[f].aggs
  for j = 1, #ids do
    local id = aggs[ids[j]].id
    if a[id] == nil then a[id] = {} end
  end
  e = { tag = tag, st = st, dirty = false, prefix = {}, ttl = ents[f].ttl }
  loaded[f][v] = e
  return e
end

local touched = {} -- key -> ttl, PEXPIREd once at the end

-- A windowed aggregation's state is one flat array, compact for cmsgpack and read through
-- Lua's array part: s[1] is the first bucket held (b0), then `w` values per bucket for
-- b0, b0+1, ... up to the newest bucket; an empty bucket holds false. Per kind:
-- count: n; sum: sum; mean: sum, n; min/max: value; last: time, value;
-- seconds_since_last: newest time; count_distinct: 1 (its HLL key exists).
local WIDTH = { count = 1, sum = 1, mean = 2, min = 1, max = 1, last = 2,
  seconds_since_last = 1, count_distinct = 1 }
for j = 1, k do aggs[j].w = WIDTH[aggs[j].kind] end

-- The index of bucket b's first value, growing the array to hold b.
local function slot(s, w, b)
  local b0 = s[1]
  if b0 == nil then
    s[1] = b
    for j = 2, 1 + w do s[j] = false end
    return 2
  end
  local size = #s
  if b < b0 then -- out of order, older than anything held: shift right
    local shift = (b0 - b) * w
    for j = size, 2, -1 do s[j + shift] = s[j] end
    for j = 2, 1 + shift do s[j] = false end
    s[1] = b
    return 2
  end
  local j = 2 + (b - b0) * w
  for jj = size + 1, j + w - 1 do s[jj] = false end
  return j
end

-- The first and last index (step w) of the buckets held within [lo, hi].
local function span(s, w, lo, hi)
  local b0 = s[1]
  if b0 == nil then return 2, 1 end
  local last = b0 + (#s - 1) / w - 1
  if lo < b0 then lo = b0 end
  if hi > last then hi = last end
  return 2 + (lo - b0) * w, 2 + (hi - b0) * w
end

-- Drop buckets below the retention floor, and leading empty ones; calls dropped(e, id, b,
-- held) for every dropped bucket that held something (its first value).
local function trim(s, w, lo, dropped, e, id)
  local b0 = s[1]
  if b0 == nil then return end
  local size = #s
  local keep = (size - 1) / w -- buckets to drop from the front
  for i = 0, (size - 1) / w - 1 do
    local held = s[2 + i * w] ~= false
    if held and b0 + i >= lo then
      keep = i
      break
    end
    if held and dropped then dropped(e, id, b0 + i, s[2 + i * w]) end
  end
  if keep == 0 then return end
  local shift = keep * w
  for j = 2, size - shift do s[j] = s[j + shift] end
  for j = size, math.max(size - shift + 1, 2), -1 do s[j] = nil end
  if #s < 2 then s[1] = nil else s[1] = b0 + keep end
end

-- count_distinct keeps HyperLogLog registers (P = 14, Redis's: features/hll.py), in one of
-- two modes per entity and aggregation.
--
-- Registers mode (every entity starts so): each bucket holds its registers in the state
-- itself, a sorted array of codes register * 64 + value (the worker hashes the members:
-- batch.r), and the state keeps the union of the newest window applied, st.r[id] = { first
-- bucket, last bucket, estimate, codes, histogram (count per value 1..top) }, kept in step
-- by every register that grows in a bucket of it. An estimate is Redis's own hllCount
-- (Ertl's estimator) over that histogram, so it equals PFCOUNT bit for bit, without a
-- command per event: no PFADD, no PFCOUNT, no key to expire.
--
-- Keys mode, once a window's union would pass CAP registers (the state would grow, and
-- its estimate cost, with every member): each bucket is a real HLL key (its registers are
-- written there as one SET of Redis's sparse encoding, then PFADD per member), described
-- by 1 in the bucket, st.k[id] set; back to registers mode once every bucket is trimmed.
-- PFCOUNT of many keys merges them all (16384 registers) on every call, so an entity whose
-- newest window holds two or more buckets keeps that window's union across batches: the key
-- :h:<id>:u, described in the state as u = { first, last, false }, kept in step by PFADDing
-- every member that grows a bucket of that window to it as well, and rebuilt (PFMERGE) only
-- when the window moves on, i.e. once per bucket. A merge costs about one multi-key PFCOUNT,
-- so it is made only when a window is read a second time (u = { first, last, PENDING }
-- after the first): an entity seen once per bucket keeps reading its buckets directly.
-- Same registers, same estimate. Other windows (late and out-of-order events) read their
-- buckets directly. A state written before registers mode (buckets of 1, no st.k) is in
-- keys mode from the first bucket of 1 it meets.
local PENDING = 0.5 -- never a bucket number
local CAP = 64
local HLL_M = 16384
local ALPHA_INF = 0.721347520444481703680 -- 0.5 / ln(2), as in hyperloglog.c

local function hll_sigma(x)
  if x == 1 then return math.huge end
  local y, z = 1, x
  while true do
    x = x * x
    local zp = z
    z = z + x * y
    y = y + y
    if zp == z then return z end
  end
end

local function hll_tau(x)
  if x == 0 or x == 1 then return 0 end
  local y, z = 1, 1 - x
  while true do
    x = math.sqrt(x)
    local zp = z
    y = y * 0.5
    local dx = 1 - x
    z = z - dx * dx * y
    if zp == z then return z / 3 end
  end
end

-- m * sigma(zeros / m) by count of zero registers: a union's few registers make few counts.
local SIGMA = {}

-- hllCount over a histogram h[1..top] (top = #h) of nr registers that are not zero: the
-- same operations in the same order (z stays exactly 0 above the highest value held).
local function hll_count(h, nr)
  if nr == 0 then return 0 end
  local top = #h
  local z = 0
  if top > 50 then
    z = HLL_M * hll_tau((HLL_M - h[51]) / HLL_M)
    top = 50
  end
  for j = top, 1, -1 do z = (z + h[j]) * 0.5 end
  local zeros = HLL_M - nr
  local sg = SIGMA[zeros]
  if sg == nil then
    sg = HLL_M * hll_sigma(zeros / HLL_M)
    SIGMA[zeros] = sg
  end
  local est = ALPHA_INF * HLL_M * HLL_M / (z + sg)
  local r = floor(est) -- llroundl: half away from zero
  if est - r >= 0.5 then r = r + 1 end
  return r
end

-- The position of register r in sorted codes, and whether it is there (else where it goes).
local function find(codes, r)
  local lo, hi = 1, #codes
  while lo <= hi do
    local mid = floor((lo + hi) / 2)
    local cr = floor(codes[mid] / 64)
    if cr == r then return mid, true end
    if cr < r then lo = mid + 1 else hi = mid - 1 end
  end
  return lo, false
end

-- Raise register r of sorted codes to v (code = r * 64 + v); the old value, or 0.
local function raise(codes, pos, found, code)
  if found then
    local old = codes[pos] % 64
    codes[pos] = code
    return old
  end
  table.insert(codes, pos, code)
  return 0
end

-- The union of the buckets held in [start, b]: { start, b, estimate, codes, histogram },
-- or false when one of them is a real HLL key.
local function union_of(s, start, b)
  local merged = {}
  local first, last = span(s, 1, start, b)
  for j = first, last do
    local codes = s[j]
    if codes == 1 then return false end
    if codes then
      for q = 1, #codes do
        local c = codes[q]
        local r = floor(c / 64)
        local old = merged[r]
        if old == nil or c > old then merged[r] = c end
      end
    end
  end
  local codes, h = {}, {}
  for _, c in pairs(merged) do codes[#codes + 1] = c end
  table.sort(codes)
  for q = 1, #codes do
    local v = codes[q] % 64
    for j = #h + 1, v do h[j] = 0 end
    h[v] = h[v] + 1
  end
  return { start, b, hll_count(h, #codes), codes, h }
end

-- A union's register grew from old to v: its histogram and estimate follow.
local function union_grew(u, old, v)
  local h = u[5]
  if old > 0 then h[old] = h[old] - 1 end
  for j = #h + 1, v do h[j] = 0 end
  h[v] = h[v] + 1
  u[3] = hll_count(h, #u[4])
end

-- Redis's HLL string of sorted codes: sparse (opcodes ZERO, XZERO, VAL), or dense when a
-- value passes sparse's 32. The cached cardinality is marked invalid: PFCOUNT computes it.
local function hll_string(codes)
  local dense = false
  for q = 1, #codes do
    if codes[q] % 64 > 32 then dense = true end
  end
  local out = { 'HYLL', dense and '\0' or '\1', '\0\0\0', '\0\0\0\0\0\0\0\128' }
  if dense then -- 16384 six-bit registers, least significant bits first
    local bytes = {}
    for q = 1, #codes do
      local c = codes[q]
      local bit = floor(c / 64) * 6
      local at, x = floor(bit / 8), (c % 64) * 2 ^ (bit % 8)
      bytes[at] = (bytes[at] or 0) + x % 256
      if x >= 256 then bytes[at + 1] = (bytes[at + 1] or 0) + floor(x / 256) end
    end
    for at = 0, HLL_M * 6 / 8 - 1 do out[#out + 1] = string.char(bytes[at] or 0) end
    return table.concat(out)
  end
  local at = 0
  local function zeros(len)
    while len > 64 do
      local l = math.min(len, HLL_M)
      out[#out + 1] = string.char(0x40 + floor((l - 1) / 256), (l - 1) % 256)
      len = len - l
    end
    if len > 0 then out[#out + 1] = string.char(len - 1) end
  end
  for q = 1, #codes do
    local c = codes[q]
    local r = floor(c / 64)
    zeros(r - at)
    out[#out + 1] = string.char(0x80 + (c % 64 - 1) * 4)
    at = r + 1
  end
  zeros(HLL_M - at)
  return table.concat(out)
end

-- Registers mode: the estimate of the event's window, its member's register applied first;
-- nil when the aggregation is to be in keys mode (nothing changed then).
local function distinct_registers(a, s, e, d, ap, i, b, start)
  local id = a.id
  local st = e.st
  local unions = st.r
  if unions == nil then unions = {}; st.r = unions end
  local newest = unions[id]
  local u -- the event's window
  if newest and newest[1] == start and newest[2] == b then
    u = newest
  elseif ap and (newest == nil or b > newest[2] or (b == newest[2] and start < newest[1])) then
    u = union_of(s, start, b) -- applied events move the newest window on
    if not u then return nil end
    unions[id] = u
    newest = u
  else
    u = d.other
    if not (u and u[1] == start and u[2] == b) then
      u = union_of(s, start, b)
      if not u then return nil end
      d.other = u
    end
  end
  local code = ap and R[a.dis][i]
  if code and code ~= null then
    local r = floor(code / 64)
    local v = code - r * 64
    local first, last = span(s, 1, b, b)
    local codes = first <= last and s[first] or false
    if codes == 1 then return nil end
    local pos, found = 1, false
    if codes then pos, found = find(codes, r) end
    if not found or codes[pos] % 64 < v then -- the bucket's register grows
      -- So does every union held whose window holds b: the event's, and the other one.
      local w = (u == newest) and d.other or newest
      if w == u or not (w and b >= w[1] and b <= w[2]) then w = nil end
      local upos, ufound = find(u[4], r)
      local wpos, wfound
      if w then wpos, wfound = find(w[4], r) end
      if (not ufound and #u[4] >= CAP) or (w and not wfound and #w[4] >= CAP) then
        return nil
      end
      if not codes then
        codes = {}
        s[slot(s, 1, b)] = codes
      end
      raise(codes, pos, found, code)
      if not ufound or u[4][upos] % 64 < v then
        union_grew(u, raise(u[4], upos, ufound, code), v)
      end
      if w and (not wfound or w[4][wpos] % 64 < v) then
        union_grew(w, raise(w[4], wpos, wfound, code), v)
      end
    end
  end
  return u[3]
end

-- Registers mode to keys mode: each bucket's registers written as its HLL key.
local function to_keys(e, id, s, d)
  local hk = d.hk
  local b0 = s[1]
  for j = 2, #s do
    local codes = s[j]
    if type(codes) == 'table' then
      call('SET', hk .. fmt('%d', b0 + j - 2), hll_string(codes), 'PX', e.ttl)
      s[j] = 1
    end
  end
  local st = e.st
  if st.r then st.r[id] = nil end
  if st.k == nil then st.k = {} end
  st.k[id] = 1
  d.other = nil
  e.dirty = true -- the state says so from now on
end

local distinct_read

-- Keys mode. Per entity and count_distinct id, d = { hk = its HLL key prefix, ver = register
-- version (+1 per PFADD that changed one), bb/bk = the last bucket's number and HLL key (a
-- busy entity asks for the same one event after event), cs/cb/cver/cv = the last estimate:
-- its window's first and last bucket, the version it was read at, its value }.
local function distinct_keys(a, s, e, d, ap, i, b, start)
  local id = a.id
  local hk = d.hk
  local unions = e.st.u
  if unions == nil then unions = {}; e.st.u = unions end
  local u = unions[id]
  local m = D[a.dis][i]
  if ap and m ~= null then
    local code = R[a.dis][i]
    local key = d.bk
    if d.bb ~= b then
      key = hk .. fmt('%d', b)
      d.bb, d.bk, d.known = b, key, {}
    end
    -- Registers of this bucket known to hold at least a value since a PFADD of this call:
    -- a member that cannot raise its register changes nothing (PFADD would answer 0),
    -- here or in the union (which holds at least the bucket's registers).
    local r = floor(code / 64)
    local v = code - r * 64
    local known = d.known
    local held = known[r]
    if held and held >= v then return distinct_read(d, id, u, s, hk, e, b, start) end
    known[r] = v
    if call('PFADD', key, m) == 1 then
      d.ver = d.ver + 1
      -- A register of a bucket in the union's window grew: so must the union's.
      if u and u[3] == false and b >= u[1] and b <= u[2] then
        call('PFADD', hk .. 'u', m)
        touched[hk .. 'u'] = e.ttl
      end
    end
    s[slot(s, 1, b)] = 1
    touched[key] = e.ttl
  end
  return distinct_read(d, id, u, s, hk, e, b, start)
end

-- Keys mode: the estimate of the window [start, b].
distinct_read = function(d, id, u, s, hk, e, b, start)
  local unions = e.st.u
  -- Same window and no register changed since the last read: same estimate. A window
  -- PENDING its merge is merged all the same, so the state does not depend on where the
  -- stream was cut into batches (a rebuild writes the very same state).
  local ver = d.ver
  if d.cs == start and d.cb == b and d.cver == ver
    and not (u and u[3] == PENDING and u[1] == start and u[2] == b) then
    return d.cv
  end
  local v
  if u and u[1] == start and u[2] == b and u[3] == false then
    v = call('PFCOUNT', hk .. 'u')
  else
    local keys = {}
    local first, last = span(s, 1, start, b)
    local b0 = s[1]
    for j = first, last do
      if s[j] then keys[#keys + 1] = hk .. fmt('%d', b0 + j - 2) end
    end
    if #keys == 0 then
      v = 0
    elseif #keys == 1 then
      v = call('PFCOUNT', keys[1])
    elseif u == nil or b > u[2] or (b == u[2] and start < u[1]) then
      -- A newer window than the union's (or a wider one ending at the same bucket, which
      -- is what applied events read): the union's next window, once read again.
      unions[id] = { start, b, PENDING }
      v = call('PFCOUNT', unpack(keys))
    elseif u[1] == start and u[2] == b then -- PENDING, read again: merge
      local ukey = hk .. 'u'
      call('DEL', ukey)
      call('PFMERGE', ukey, unpack(keys))
      touched[ukey] = e.ttl
      unions[id] = { start, b, false }
      v = call('PFCOUNT', ukey)
    else
      v = call('PFCOUNT', unpack(keys))
    end
  end
  d.cs, d.cb, d.cver, d.cv = start, b, ver, v
  return v
end

local function distinct(a, s, e, ap, i, b, start)
  local id = a.id
  local dis = e.dis
  if dis == nil then dis = {}; e.dis = dis end
  local d = dis[id]
  if d == nil then
    d = { hk = e.tag .. ':h:' .. id .. ':', ver = 0 }
    dis[id] = d
  end
  local keys = e.st.k
  if not (keys and keys[id]) then
    local v = distinct_registers(a, s, e, d, ap, i, b, start)
    if v then return v end
    to_keys(e, id, s, d)
  end
  return distinct_keys(a, s, e, d, ap, i, b, start)
end

-- What a window holds apart from its newest bucket, by kind: { first, last bucket, ... }.
-- Buckets other than the event's own change only when an event lands out of order, and
-- then its own window differs, so a prefix keyed by (first, last) stays valid all batch.
-- Reading prefix + own bucket adds in the same order as summing the whole window.
local function window_prefix(kind, s, w, start, b, p)
  local first, last = span(s, w, start, b - 1)
  local v1, v2 = false, false
  if kind == 'count' or kind == 'sum' then
    v1 = 0
    for j = first, last do
      local v = s[j]
      if v then v1 = v1 + v end
    end
  elseif kind == 'mean' then
    v1, v2 = 0, 0
    for j = first, last, 2 do
      local v = s[j]
      if v then
        v1 = v1 + v
        v2 = v2 + s[j + 1]
      end
    end
  elseif kind == 'min' then
    for j = first, last do
      local v = s[j]
      if v and (not v1 or v < v1) then v1 = v end
    end
  elseif kind == 'max' or kind == 'seconds_since_last' then
    for j = first, last do
      local v = s[j]
      if v and (not v1 or v > v1) then v1 = v end
    end
  else -- last: the newest valued event; bucket order is time order
    for j = first, last, 2 do
      if s[j] then v1, v2 = s[j], s[j + 1] end
    end
  end
  p[1], p[2], p[3], p[4], p[5] = start, b, v1, v2, nil
  return p
end

-- The index of the event's own bucket b in s (nil when s does not reach it); `make` grows
-- s to hold it. Kept in the window's prefix as p[5]: s is reshaped only by slot() for an
-- event of this aggregation, whose own window then replaced the prefix, so while the
-- prefix matches, so does the index, and a busy entity skips slot() and span().
local function own(s, w, b, p, make)
  local j = p[5]
  if j then return j end
  if make then
    j = slot(s, w, b)
  else
    local first, last = span(s, w, b, b)
    if first <= last then j = first end
  end
  p[5] = j
  return j
end

local function windowed(a, s, e, t, ap, wm, i)
  local B, n = a.B, a.n
  local b = floor(t / B)
  local start = b - n + 1
  local lo
  if wm then -- the retention floor; only a late event's window reaches below it
    lo = floor(wm / B) - n - a.c
    if lo > start then start = lo end
  end
  local kind = a.kind
  if kind == 'count_distinct' then return distinct(a, s, e, ap, i, b, start) end
  -- A late event whose whole window lies below the floor reads an empty window (it is not
  -- applied: an applied event's window always lies above the floor).
  if start > b then return a.empty end
  local id = a.id
  local w = a.w
  -- An applied event past the newest bucket held, after a gap: the buckets below the
  -- retention floor are dead for the rest of the call (the watermark only grows, and no
  -- window reaches below it), so they go now, instead of slot() filling the gap up to b
  -- with empty buckets for the write back to drop. The write back's trim then finds the
  -- same state it would have made.
  local b0 = s[1]
  if ap and b0 and b0 < lo and b > b0 + (#s - 1) / w - 1 then
    trim(s, w, lo)
    e.prefix[id] = nil
  end
  local p = e.prefix[id]
  if p == nil then
    p = window_prefix(kind, s, w, start, b, {})
    e.prefix[id] = p
  elseif p[1] ~= start or p[2] ~= b then
    window_prefix(kind, s, w, start, b, p)
  end
  -- j: the event's own bucket, if held (or made, when the event applies)
  local j
  if kind == 'count' then
    j = own(s, 1, b, p, ap)
    if ap then s[j] = (s[j] or 0) + 1 end
    local v = j and s[j]
    if v then return p[3] + v end
    return p[3]
  end
  local x
  if kind ~= 'seconds_since_last' then x = X[a.num][i] end
  local applies = ap and x ~= null
  if kind == 'seconds_since_last' then applies = ap end
  j = own(s, w, b, p, applies)
  local v = j and s[j]
  if kind == 'sum' then
    if applies then
      v = (v or 0) + x
      s[j] = v
    end
    if v then return p[3] + v end
    return p[3]
  elseif kind == 'mean' then
    local total, count = p[3], p[4]
    if applies then
      if v then
        s[j], s[j + 1] = v + x, s[j + 1] + 1
      else
        s[j], s[j + 1] = x, 1
      end
      v = s[j]
    end
    if v then
      total = total + v
      count = count + s[j + 1]
    end
    if count > 0 then return total / count end
    return 0
  elseif kind == 'min' then
    if applies and (not v or x < v) then
      v = x
      s[j] = x
    end
    local best = p[3]
    if v and (not best or v < best) then best = v end
    if not best then return a.fill end
    return best
  elseif kind == 'max' then
    if applies and (not v or x > v) then
      v = x
      s[j] = x
    end
    local best = p[3]
    if v and (not best or v > best) then best = v end
    if not best then return a.fill end
    return best
  elseif kind == 'last' then
    if applies and (not v or t >= v) then -- ties go to the later event
      s[j], s[j + 1] = t, x
      v = t
    end
    if v then return s[j + 1] end
    if p[3] then return p[4] end
    return a.fill
  else -- seconds_since_last: the newest event applied before this one, read before updating
    local prev = p[3]
    if v and (not prev or v > prev) then prev = v end
    if applies and (not v or t > v) then s[j] = t end
    if not prev then return a.fill end
    local d = (t - prev) / 1000
    if d < 0 then return 0 end
    return d
  end
end

-- s = { S, W, T }: decayed sum, decayed weight (the sum of x = 1), max event time.
local function decayed(a, s, t, ap, i)
  local x = X[a.num][i]
  if ap and x ~= null then
    local T = s[3]
    if T == nil then
      s[1], s[2], s[3] = x, 1, t
    elseif t >= T then
      local f = 2 ^ (-(t - T) / a.h)
      s[1], s[2], s[3] = s[1] * f + x, s[2] * f + 1, t
    else
      local f = 2 ^ (-(T - t) / a.h)
      s[1], s[2] = s[1] + x * f, s[2] + f
    end
  end
  if s[3] == nil then return 0 end
  if a.kind == 'decayed_sum' then return s[1] end
  if s[2] > 0 then return s[1] / s[2] end
  return 0
end

-- Source partitions per shard: high-water (hw: as the events are applied, hw0: as read),
-- the replay records this call writes (recs by record id, chunks: per chunk a list of
-- packed records) and those it read (stored: per chunk, by record id). A record id is
-- offset * 256 + entity field number, a number (no string per record), exact for offsets
-- below 2^45 (fields are at most 255: features.spec.MAX_ENTITIES).
local parts = {}
local chunk_size = cfg.chunk
-- A packed record: offset (float64, exact below 2^53), the entity's record layout (`lid`,
-- 4 bytes: its field and its aggregation ids in column order, see RedisFeatureStore) and
-- column count (2 bytes), then those columns (float64 each) and its late byte: the replay
-- answer itself. A record of another layout (written under an earlier spec) is skipped:
-- its replay is recomputed read-only, as for an expired record, never read misaligned.
local REC_HEAD = '<dI4H'
local BY_LID = {}
for f = 1, n_ents do BY_LID[ents[f].lid] = f end

-- The records of chunk c of a partition, read once per call (only replays read them).
local function stored_records(part, p, c)
  local got = part.stored[c]
  if got then return got end
  got = {}
  local blob = call('GET', part.key .. 'rec:' .. P[p] .. ':' .. fmt('%d', c))
  if blob then
    local pos, size = 1, #blob
    while pos <= size do
      local off, lid, cols, start = struct.unpack(REC_HEAD, blob, pos)
      local stop = start + 8 * cols + 1
      if stop - 1 > size then break end -- truncated: nothing after it is read
      local f = BY_LID[lid]
      if f then got[off * 256 + f] = string.sub(blob, start, stop - 1) end
      pos = stop
    end
  end
  part.stored[c] = got
  return got
end

local function partition(sh, p)
  local of = parts[sh]
  if of == nil then of = {}; parts[sh] = of end
  local part = of[p]
  if part then return part end
  local key = SP[sh]
  local hw = call('GET', key .. 'hw:' .. P[p])
  hw = hw and tonumber(hw) or nil
  part = { key = key, hw = hw, hw0 = hw, recs = {}, chunks = {}, stored = {} }
  of[p] = part
  return part
end

-- Lost state (features.semantics.lost_epoch, then behind: same rules, same order, per
-- shard of the call), checked before any write. g = { ep = the epoch the caller saw or
-- null, new = the epoch a fresh pipeline writes, f = per partition of P its floor (null:
-- no history) }; no g (a rebuild) checks nothing and writes no epoch. A stale high-water
-- marks the epoch of every shard of the call lost.
-- Every shard's epoch is read first, guarded or not: on a cluster a shard that is not (or
-- no longer wholly) on this node fails the call here, before anything is written (Redis
-- 7.0 lets a call declare keys of one slot only, KEYS[1]; the others are checked here).
local EK, epochs = {}, {}
for c, sh in ipairs(CS) do
  EK[c] = SP[sh] .. 'epoch'
  epochs[c] = call('GET', EK[c])
end
local guard, epoch = batch.g, false
if guard then
  local floors, history, lost = guard.f, false, nil
  for p = 1, #floors do
    if floors[p] ~= null then history = true end
  end
  for c, sh in ipairs(CS) do
    local ep = epochs[c]
    local held = false
    for p = 1, #floors do
      if floors[p] ~= null then held = held or partition(sh, p).hw ~= nil end
    end
    if lost then
    elseif ep == cfg.rebuilding then
      lost = 'a rebuild of the state is running or did not finish'
    elseif ep == cfg.lost then
      lost = 'the state was found older than what was applied (see the first alert)'
    elseif not ep and guard.ep ~= null then
      lost = fmt('the state epoch %s is gone (shard %d)', guard.ep, sh - 1)
    elseif not ep and history and not held then
      lost = fmt('no state epoch although the partitions were processed before (shard %d)',
        sh - 1)
    end
  end
  for _, sh in ipairs(CS) do
    for p = 1, #floors do
      local f, hw = floors[p], partition(sh, p).hw
      if not lost and f ~= null and (hw or -1) < f then
        -- every worker stops: entities span partitions, and every call covers every shard
        for c = 1, #CS do call('SET', EK[c], cfg.lost) end
        lost = fmt('%s was applied up to offset %d, the state has %s (shard %d)', P[p], f,
          hw and fmt('%d', hw) or 'none', sh - 1)
      end
    end
  end
  if lost then return { 'lost', lost } end
  for c = 1, #CS do
    local ep = epochs[c]
    if not ep then
      ep = guard.new
      call('SET', EK[c], ep)
    end
    if not epoch then epoch = ep end
  end
end

local rows, flags, vals = {}, {}, {}
-- Per event, what its entities applied: (shard, partition) state, entity field, late bit;
-- their high-water marks and replay records are set once the whole event is computed.
local applied, applied_f, applied_late = {}, {}, {}
for i = 1, n do
  local t = times[i]
  local replayed, late = false, false
  local si, off = S and S[i] or 0, nil
  if si > 0 then off = O[i] end
  local n_applied = 0
  if HOME[i] and si > 0 then
    local part = partition(1, si)
    if part.hw and off <= part.hw then
      replayed = true
    else
      n_applied = 1
      applied[1], applied_f[1] = part, false
    end
  end
  for f = 1, n_ents do
    local ids = ents[f].aggs
    local v = E[f][i]
    if v == null then
      for j = 1, #ids do vals[ids[j]] = aggs[ids[j]].empty end
    else
      local sh = H[f][i]
      local part, replay, rec
      if si > 0 then
        part = partition(sh, si)
        if part.hw and off <= part.hw then
          replay = true
          replayed = true
          local id = off * 256 + f
          rec = part.recs[id] or stored_records(part, si, floor(off / chunk_size))[id]
        end
      end
      if rec then
        local got = { struct.unpack(ents[f].fmt, rec) }
        for j = 1, #ids do vals[ids[j]] = got[j] end
        if string.byte(rec, -1) == 1 then late = true end
      else -- a new event, or a replay whose record expired (read only)
        local e = entity(f, v, sh)
        local st = e.st
        local wm = st.w
        local ap = not replay
        local late_f = false
        if ap and wm and t < wm - lateness then
          ap = false
          late_f = true
          late = true
        end
        if ap then
          if wm == nil or t > wm then
            st.w = t
            wm = t
          end
          e.dirty = true
        end
        local states = st.a
        for j = 1, #ids do
          local a = aggs[ids[j]]
          if a.win then
            vals[ids[j]] = windowed(a, states[a.id], e, t, ap, wm, i)
          else
            vals[ids[j]] = decayed(a, states[a.id], t, ap, i)
          end
        end
        if part and not replay then
          n_applied = n_applied + 1
          applied[n_applied], applied_f[n_applied], applied_late[n_applied] = part, f, late_f
        end
      end
    end
  end
  local row = struct.pack(row_fmt, unpack(vals, 1, k))
  rows[i] = row
  -- After all of the event's entities: two entities of one shard are one event.
  for j = 1, n_applied do
    local part, f = applied[j], applied_f[j]
    if part.hw == nil or off > part.hw then part.hw = off end
    if f then
      local ent = ents[f]
      local r
      if ent.lo then
        r = string.sub(row, ent.lo, ent.hi)
      else
        local ids, got = ent.aggs, {}
        for q = 1, #ids do got[q] = vals[ids[q]] end
        r = struct.pack(ent.fmt, unpack(got))
      end
      r = r .. (applied_late[j] and '\1' or '\0')
      part.recs[off * 256 + f] = r
      local c = floor(off / chunk_size)
      local packed = part.chunks[c]
      if packed == nil then
        packed = {}
        part.chunks[c] = packed
      end
      packed[#packed + 1] = struct.pack(REC_HEAD, off, ent.lid, #ent.aggs)
      packed[#packed + 1] = r
    end
  end
  local flag = 0
  if replayed then flag = 2 end
  if late then flag = flag + 1 end
  flags[i] = flag_char[flag]
end

-- The writes of the call's end are made only once every key they touch is known to be on
-- this node: on a cluster a slot may be migrating (its keys moving one by one), and a
-- script that fails on a key moved away keeps the writes it made before. So first the
-- state is computed and the keys to write listed (`dels`, `sets`, the record chunks), then
-- (on a cluster) each key not read yet is probed with EXISTS, which fails the call here,
-- with nothing of it written, when the key has moved (the caller retries: see
-- features/shard_calls.py); then everything is written. The writes before this point (in
-- keys mode: PFADD, a union's PFMERGE, a bucket's HLL key from its registers) are all
-- idempotent, so a call failed after them and retried counts nothing twice.
local dels = {}
local sets = {} -- key, value, ttl: one state per changed entity

-- A count_distinct bucket below the retention floor: its HLL key goes (keys mode), and any
-- union holding it.
local function drop_distinct(e, id, bb, held)
  local hk = e.tag .. ':h:' .. id .. ':'
  if held == 1 then
    local key = hk .. fmt('%d', bb)
    dels[#dels + 1] = key
    touched[key] = nil
  end
  local newest = e.st.r and e.st.r[id]
  if newest and bb >= newest[1] and bb <= newest[2] then e.st.r[id] = nil end
  local unions = e.st.u
  local u = unions and unions[id]
  if u and bb >= u[1] and bb <= u[2] then
    unions[id] = nil
    if u[3] == false then
      dels[#dels + 1] = hk .. 'u'
      touched[hk .. 'u'] = nil
    end
  end
end

-- Each changed entity trimmed to its retention floor, packed for one SET.
for f = 1, n_ents do
  local ids = ents[f].aggs
  local ttl = ents[f].ttl
  for _, e in pairs(loaded[f]) do
    if e.dirty then
      local st = e.st
      local wm = st.w
      -- Only the spec's aggregations: state of removed ones is dropped.
      local kept, unions, registers, keys = {}, {}, {}, {}
      for j = 1, #ids do
        local a = aggs[ids[j]]
        local s = st.a[a.id]
        if a.win then
          local lo = floor(wm / a.B) - a.n - a.c
          if a.kind == 'count_distinct' then
            -- The union lives as long as the state that describes it.
            local u = st.u and st.u[a.id]
            if u and u[3] == false then touched[e.tag .. ':h:' .. a.id .. ':u'] = ttl end
            trim(s, 1, lo, drop_distinct, e, a.id)
            if st.k and st.k[a.id] then
              if s[1] == nil then st.k[a.id] = nil else keys[a.id] = 1 end -- all trimmed
            end
            if st.r then registers[a.id] = st.r[a.id] end
          else
            trim(s, a.w, lo)
          end
        end
        kept[a.id] = s
        if st.u then unions[a.id] = st.u[a.id] end
      end
      -- A fresh table, filled in a fixed order: cmsgpack writes a map in Lua's iteration
      -- order, which depends on the table's history, and a rebuild must write the same
      -- bytes. Most entities have no union: no empty map to pack and unpack.
      local out = { w = st.w, a = kept }
      if next(unions) then out.u = unions end
      if next(registers) then out.r = registers end
      if next(keys) then out.k = keys end
      sets[#sets + 1] = { e.tag .. ':s', cmsgpack.pack(out), ttl } -- its GET made it local
    end
  end
end
-- Every shard of the call holds each partition's high-water of the whole batch (a shard
-- that had no event of it too), so a shard's high-water is never below a delivered offset.
-- No TTL: a high-water that expired would read as lost state (see the guard above).
local M = batch.m
local chunks = {} -- key, packed records
if M then
  for _, sh in ipairs(CS) do
    for p = 1, #P do
      local part = partition(sh, p) -- reads its high-water: local from here on
      for c, packed in pairs(part.chunks) do
        chunks[#chunks + 1] = { part.key .. 'rec:' .. P[p] .. ':' .. fmt('%d', c), packed }
      end
    end
  end
end
if cfg.cluster then
  for _, key in ipairs(dels) do call('EXISTS', key) end
  for key in pairs(touched) do call('EXISTS', key) end
  for _, chunk in ipairs(chunks) do call('EXISTS', chunk[1]) end
end

for _, key in ipairs(dels) do call('DEL', key) end
for _, w in ipairs(sets) do call('SET', w[1], w[2], 'PX', w[3]) end
for key, ttl in pairs(touched) do call('PEXPIRE', key, ttl) end
if M then
  for _, sh in ipairs(CS) do
    for p = 1, #P do
      local part = partition(sh, p)
      local top = M[p]
      if top ~= null and (part.hw0 == nil or top > part.hw0) then
        call('SET', part.key .. 'hw:' .. P[p], fmt('%d', top))
      end
    end
  end
end
for _, chunk in ipairs(chunks) do
  call('APPEND', chunk[1], table.concat(chunk[2]))
  call('PEXPIRE', chunk[1], cfg.replay_ttl)
end

return { table.concat(rows), table.concat(flags), epoch }

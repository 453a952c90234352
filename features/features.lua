--[[
features.lua: update and read one micro-batch of feature events, atomically, in one call.

Called by features/redis_store.py as EVALSHA <sha> 0 <config> <batch>, both cjson documents
(see RedisFeatureStore for their fields and the key layout). The rules are those of
features/semantics.py and features/reference.py, written the same way: the same integer
bucket arithmetic and the same float operations in the same order, so both stores read
bit-identical numbers.

Per batch: each entity's state (one cmsgpack string) is read once with GET, changed in a
Lua table, trimmed to the retention floor and written back once with SET PX; count_distinct
buckets are real HyperLogLog keys (PFADD/PFCOUNT). Returns {rows, flags}: rows is n*k
little-endian float64 (Lua numbers returned as replies would be truncated to integers),
flags one byte per event (1 = late, 2 = replayed).
]]

local cfg = cjson.decode(ARGV[1])
local batch = cjson.decode(ARGV[2])

local null = cjson.null
local floor = math.floor
local fmt = string.format
local call = redis.call

local prefix = cfg.prefix
local lateness = cfg.lateness
local aggs = cfg.aggs
local ents = cfg.ents
local k = #aggs
local n_ents = #ents
local row_fmt = '<' .. string.rep('d', k)
local flag_char = { [0] = '\0', '\1', '\2', '\3' }

local times = batch.t
local n = #times
local E, X, D = batch.e, batch.x, batch.d
local S, O, P = batch.s, batch.o, batch.p

-- '}' would end the Cluster hash tag early and '%' is the escape itself.
local function escape(v)
  if string.find(v, '[%%}]') then
    v = string.gsub(v, '%%', '%%25')
    v = string.gsub(v, '}', '%%7D')
  end
  return v
end

-- loaded[f][value] = { tag, st = { w = watermark, a = { [agg id] = state } }, dirty,
--                      ver = count_distinct register versions, cache = PFCOUNT cache }
local loaded = {}
for f = 1, n_ents do loaded[f] = {} end

local function entity(f, v)
  local e = loaded[f][v]
  if e then return e end
  local tag = prefix .. '{' .. ents[f].tag .. '=' .. escape(v) .. '}'
  local blob = call('GET', tag .. ':s')
  local st
  if blob then st = cmsgpack.unpack(blob) else st = { a = {} } end
  local a = st.a
  local ids = ents[f].aggs
  for j = 1, #ids do
    local id = aggs[ids[j]].id
    if a[id] == nil then a[id] = {} end
  end
  e = { tag = tag, st = st, dirty = false, ver = {}, cache = {}, ttl = ents[f].ttl }
  loaded[f][v] = e
  return e
end

local touched = {} -- HLL key -> ttl, PEXPIREd once at the end

local function windowed(a, s, e, t, ap, wm, i)
  local B = a.B
  local b = floor(t / B)
  local start = b - a.n + 1
  if wm then -- the retention floor; only a late event's window reaches below it
    local lo = floor(wm / B) - a.n - a.c
    if lo > start then start = lo end
  end
  local kind = a.kind
  if kind == 'count' then
    if ap then s[b] = (s[b] or 0) + 1 end
    local acc = 0
    for bb = start, b do
      local v = s[bb]
      if v then acc = acc + v end
    end
    return acc
  elseif kind == 'sum' then
    local x = X[a.num][i]
    if ap and x ~= null then s[b] = (s[b] or 0) + x end
    local acc = 0
    for bb = start, b do -- increasing bucket order, as the reference adds
      local v = s[bb]
      if v then acc = acc + v end
    end
    return acc
  elseif kind == 'mean' then
    local x = X[a.num][i]
    if ap and x ~= null then
      local v = s[b]
      if v then
        v[1] = v[1] + x
        v[2] = v[2] + 1
      else
        s[b] = { x, 1 }
      end
    end
    local total, count = 0, 0
    for bb = start, b do
      local v = s[bb]
      if v then
        total = total + v[1]
        count = count + v[2]
      end
    end
    if count > 0 then return total / count end
    return 0
  elseif kind == 'min' then
    local x = X[a.num][i]
    if ap and x ~= null then
      local v = s[b]
      if v == nil or x < v then s[b] = x end
    end
    local best
    for bb = start, b do
      local v = s[bb]
      if v and (best == nil or v < best) then best = v end
    end
    if best == nil then return a.fill end
    return best
  elseif kind == 'max' then
    local x = X[a.num][i]
    if ap and x ~= null then
      local v = s[b]
      if v == nil or x > v then s[b] = x end
    end
    local best
    for bb = start, b do
      local v = s[bb]
      if v and (best == nil or v > best) then best = v end
    end
    if best == nil then return a.fill end
    return best
  elseif kind == 'last' then
    local x = X[a.num][i]
    if ap and x ~= null then
      local v = s[b]
      if v == nil or t >= v[1] then s[b] = { t, x } end -- ties go to the later event
    end
    local best
    for bb = start, b do
      local v = s[bb]
      if v and (best == nil or v[1] > best[1]) then best = v end
    end
    if best == nil then return a.fill end
    return best[2]
  elseif kind == 'seconds_since_last' then
    local prev -- newest event applied before this one: read before updating
    for bb = start, b do
      local v = s[bb]
      if v and (prev == nil or v > prev) then prev = v end
    end
    if ap then
      local v = s[b]
      if v == nil or t > v then s[b] = t end
    end
    if prev == nil then return a.fill end
    local d = (t - prev) / 1000
    if d < 0 then return 0 end
    return d
  else -- count_distinct
    local id = a.id
    local m = D[a.dis][i]
    if ap and m ~= null then
      local key = e.tag .. ':h:' .. id .. ':' .. fmt('%d', b)
      if call('PFADD', key, m) == 1 then e.ver[id] = (e.ver[id] or 0) + 1 end
      s[b] = 1
      touched[key] = e.ttl
    end
    -- Same window and no register changed since the last PFCOUNT: same estimate.
    local ver = e.ver[id] or 0
    local c = e.cache[id]
    if c and c[1] == start and c[2] == b and c[3] == ver then return c[4] end
    local keys = {}
    for bb = start, b do
      if s[bb] then keys[#keys + 1] = e.tag .. ':h:' .. id .. ':' .. fmt('%d', bb) end
    end
    local v = 0
    if #keys > 0 then v = call('PFCOUNT', unpack(keys)) end
    e.cache[id] = { start, b, ver, v }
    return v
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

-- Source partitions: highest applied offset and the replay records of this batch.
local parts = {}
local chunk_size = cfg.chunk

local function partition(p)
  local part = parts[p]
  if part then return part end
  local tag = prefix .. '{src=' .. P[p] .. '}'
  local hw = call('GET', tag .. ':hw')
  part = { tag = tag, hw = hw and tonumber(hw) or nil, dirty = false, recs = {}, chunks = {} }
  parts[p] = part
  return part
end

local rows, flags, vals = {}, {}, {}
for i = 1, n do
  local t = times[i]
  local flag = 0
  local row
  local replay = false
  local part, off
  if S and S[i] > 0 then
    part = partition(S[i])
    off = O[i]
    if part.hw and off <= part.hw then
      replay = true
      flag = 2
      row = part.recs[off]
      if row == nil then
        local rec = call('HGET', part.tag .. ':r:' .. fmt('%d', floor(off / chunk_size)),
          fmt('%d', off))
        if rec then row = rec end
      end
      if row then
        flag = 2 + string.byte(row, -1)
        row = string.sub(row, 1, -2)
      end
    end
  end
  if row == nil then -- a new event, or a replay whose record expired (read only)
    local late = false
    for f = 1, n_ents do
      local ids = ents[f].aggs
      local v = E[f][i]
      if v == null then
        for j = 1, #ids do vals[ids[j]] = aggs[ids[j]].empty end
      else
        local e = entity(f, v)
        local st = e.st
        local wm = st.w
        local ap = not replay
        if ap and wm and t < wm - lateness then
          ap = false
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
      end
    end
    row = struct.pack(row_fmt, unpack(vals, 1, k))
    if late then flag = 1 end
    if part and not replay then
      part.hw = off
      part.dirty = true
      local rec = row .. flag_char[flag]
      part.recs[off] = rec
      local c = floor(off / chunk_size)
      local args = part.chunks[c]
      if args == nil then
        args = {}
        part.chunks[c] = args
      end
      args[#args + 1] = fmt('%d', off)
      args[#args + 1] = rec
    end
  end
  rows[i] = row
  flags[i] = flag_char[flag]
end

-- Write back: trim each changed entity to its retention floor, then one SET per entity.
for f = 1, n_ents do
  local ids = ents[f].aggs
  for _, e in pairs(loaded[f]) do
    if e.dirty then
      local st = e.st
      local wm = st.w
      local kept = {} -- only the spec's aggregations: state of removed ones is dropped
      for j = 1, #ids do
        local a = aggs[ids[j]]
        local s = st.a[a.id]
        if a.win then
          local lo = floor(wm / a.B) - a.n - a.c
          for bb in pairs(s) do
            if bb < lo then
              s[bb] = nil
              if a.kind == 'count_distinct' then
                local key = e.tag .. ':h:' .. a.id .. ':' .. fmt('%d', bb)
                call('DEL', key)
                touched[key] = nil
              end
            end
          end
        end
        kept[a.id] = s
      end
      st.a = kept
      call('SET', e.tag .. ':s', cmsgpack.pack(st), 'PX', ents[f].ttl)
    end
  end
end
for key, ttl in pairs(touched) do call('PEXPIRE', key, ttl) end
for _, part in pairs(parts) do
  if part.dirty then
    call('SET', part.tag .. ':hw', fmt('%d', part.hw), 'PX', cfg.hw_ttl)
    for c, args in pairs(part.chunks) do
      local key = part.tag .. ':r:' .. fmt('%d', c)
      call('HSET', key, unpack(args))
      call('PEXPIRE', key, cfg.replay_ttl)
    end
  end
end

return { table.concat(rows), table.concat(flags) }

-- The feature store's apply script (features.store.RedisFeatureStore.apply), loaded once per server.
--
-- Applies one event's operations on one hash tag exactly once. KEYS[1] is the marker (same tag), KEYS[2..] the
-- data keys; ARGV[1] the marker's TTL, then ops as (code, key index, ...). Redis does not undo a script's
-- writes when it fails midway, so after the marker (which a redelivered event finds) the script reads,
-- checks and computes everything before it writes anything else. A key of another type, a damaged stored
-- value or an op it cannot carry out takes the marker back and returns an error starting with BADEVENT, with
-- nothing written. The writes after that cannot fail. The marker, the first write, may be refused when Redis
-- is out of memory, and then none is made (Redis checks memory at a script's first write only).
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
-- new[k][f]: the value to write, or false to delete; written keys and their fields in first-write order.
-- hashes[k]: k is known to be a hash or absent (read without error, or its type checked).
local new, written, fields, expiries, hashes = {}, {}, {}, {}, {}
local function not_a_hash(k)
  error(k .. ' holds a ' .. redis.call('TYPE', k).ok .. ', not a hash', 0)
end
local function read(k, cmd, ...)
  local got = redis.pcall(cmd, k, ...)
  if type(got) == 'table' and got.err then not_a_hash(k) end
  hashes[k] = true
  return got
end
local function put(k, f, v)
  if not hashes[k] then
    local kind = redis.call('TYPE', k).ok
    if kind ~= 'hash' and kind ~= 'none' then not_a_hash(k) end
    hashes[k] = true
  end
  if new[k] == nil then new[k] = {}; fields[k] = {}; written[#written + 1] = k end
  if new[k][f] == nil then fields[k][#fields[k] + 1] = f end
  new[k][f] = v
end
local function get(k, f)
  local v = new[k] and new[k][f]
  if v == nil then return read(k, 'HGET', f) end
  return v
end
local function compute()
  local i = 2
  while i <= #ARGV do
    local op, k = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
    if k == nil then error('no key ' .. tostring(ARGV[i + 1]) .. ' for op ' .. op, 0) end
    if op == 'v' then
      -- Mirror of features.packing.add_to_vector: add to slots of a packed float64 vector.
      local f, w = ARGV[i + 2], tonumber(ARGV[i + 3])
      local blob = get(k, f)
      local vals = {}
      for j = 1, w do
        if blob then vals[j] = struct.unpack('<d', blob, 1 + (j - 1) * 8) else vals[j] = 0 end
      end
      local q = i + 4
      while ARGV[q] ~= '|' do
        local slot = tonumber(ARGV[q]) + 1
        vals[slot] = vals[slot] + tonumber(ARGV[q + 1]); q = q + 2
      end
      local parts = {}
      for j = 1, w do parts[j] = struct.pack('<d', vals[j]) end
      put(k, f, table.concat(parts)); i = q + 1
    elseif op == 's' then
      put(k, ARGV[i + 2], ARGV[i + 3]); i = i + 4
    elseif op == 'x' then
      expiries[#expiries + 1] = {k, string.format('%d', tonumber(ARGV[i + 2]))}; i = i + 4
    elseif op == 't' then
      -- Mirror of features.packing.add_to_recent (then pack_recent) on a blob kept in 64-byte chunks
      -- (split_blob / join_blob).
      local f = ARGV[i + 2]
      local t, tau, cap = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
      local chunks = {f, f .. '1', f .. '2', f .. '3'}
      local got
      if new[k] == nil then got = read(k, 'HMGET', unpack(chunks)) else
        got = {}
        for c = 1, #chunks do got[c] = get(k, chunks[c]) end
      end
      local blob = nil
      if got[1] then
        blob = ''
        for c = 1, #chunks do if got[c] then blob = blob .. got[c] end end
      end
      local last, ids, vals, index = t, {}, {}, {}
      if blob then
        last = struct.unpack('<d', blob)
        local pos = 9
        while pos + 7 <= #blob do
          local id, v = struct.unpack('<If', blob, pos)
          ids[#ids + 1] = id; vals[#vals + 1] = v; pos = pos + 8
        end
      end
      local scale, add = 1, 1
      if t >= last then scale = math.exp(-(t - last) / tau); last = t
      else add = math.exp(-(last - t) / tau) end
      for j = 1, #ids do vals[j] = vals[j] * scale; index[ids[j]] = j end
      local q = i + 6
      while ARGV[q] ~= '|' do
        local id = tonumber(ARGV[q])
        local j = index[id]
        if j then vals[j] = vals[j] + add else ids[#ids + 1] = id; vals[#vals + 1] = add; index[id] = #ids end
        q = q + 1
      end
      local order, r32 = {}, {}
      for j = 1, #ids do order[j] = j; r32[j] = struct.unpack('<f', struct.pack('<f', vals[j])) end
      table.sort(order, function(a, b)
        if r32[a] ~= r32[b] then return r32[a] > r32[b] end
        return ids[a] < ids[b]
      end)
      local parts = {struct.pack('<d', last)}
      for m = 1, math.min(cap, #order) do
        parts[#parts + 1] = struct.pack('<If', ids[order[m]], vals[order[m]])
      end
      local out = table.concat(parts)
      for c = 1, #chunks do
        local piece = string.sub(out, (c - 1) * 64 + 1, c * 64)
        if piece == '' then piece = false end
        put(k, chunks[c], piece)
      end
      i = q + 1
    else
      error('unknown op ' .. op, 0)
    end
  end
end
local ok, err = pcall(compute)
if not ok then
  redis.call('DEL', KEYS[1])
  if type(err) == 'table' then err = err.err end
  return redis.error_reply('BADEVENT ' .. tostring(err))
end
for _, k in ipairs(written) do
  local set, gone = {}, {}
  for _, f in ipairs(fields[k]) do
    if new[k][f] then set[#set + 1] = f; set[#set + 1] = new[k][f] else gone[#gone + 1] = f end
  end
  -- Sets before deletes: a hash never empties on the way (Redis would drop it, and its TTL with it).
  if #set > 0 then redis.call('HSET', k, unpack(set)) end
  if #gone > 0 then redis.call('HDEL', k, unpack(gone)) end
end
for _, e in ipairs(expiries) do redis.call('EXPIRE', e[1], e[2]) end
return 1

-- The feature store's apply script (features.store.RedisFeatureStore.apply), loaded once per server.
--
-- Applies events' operations on one hash tag, each event exactly once. KEYS are the events' markers and the
-- data keys (all of the tag); ARGV[1] is the markers' TTL, then each event in order as (its marker's index
-- in KEYS, the count n of its op arguments, then n arguments: ops as (code, key index, ...)). Returns one
-- answer per event: 1 applied, 0 seen before, or an error text starting with BADEVENT.
--
-- Redis does not undo a script's writes when it fails midway, so for each event, after its marker (which a
-- redelivered event finds), the script reads, checks and computes everything before it writes anything
-- else. A key of another type, a damaged stored value or an op it cannot carry out takes the event's
-- marker back: nothing of that event is written, and the next event goes on. The events' writes are made
-- together at the end, and cannot fail. The first marker, the script's first write, may be refused when Redis is out of memory, and
-- then none is made (Redis checks memory at a script's first write only).
--
-- One call carries every event of a batch on the tag: a consumer's batch touches far fewer tags than its
-- events touch one by one (the 16 block-stats shards above all), and a call costs Redis more than the work
-- of one event in it.
local ttl = ARGV[1]
-- new[k][f]: the current event's value to write, or false to delete; written keys and their fields in
-- first-write order; expiries as {key, seconds}. held: the same for the events applied before it in this
-- call, all written at the end (one HSET per key, where each event wrote its own). hashes[k]: k is known
-- to be a hash or absent (read, or its type checked).
local new, written, fields, expiries, hashes = {}, {}, {}, {}, {}
local held = {new = {}, written = {}, fields = {}, expiries = {}}
local formats = {}
-- A struct format: head, then item n times (cached: the same few are asked for again and again).
local function format(head, item, n)
  local key = head .. item .. n
  if formats[key] == nil then formats[key] = head .. string.rep(item, n) end
  return formats[key]
end
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
  if v == nil then v = held.new[k] and held.new[k][f] end
  if v == nil then return read(k, 'HGET', f) end
  return v
end
local function compute(i, last)
  while i <= last do
    local op, k = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
    if k == nil then error('no key ' .. tostring(ARGV[i + 1]) .. ' for op ' .. op, 0) end
    if op == 'v' then
      -- Mirror of features.packing.add_to_vector: add to slots of a packed float64 vector.
      local f, w = ARGV[i + 2], tonumber(ARGV[i + 3])
      local blob, doubles = get(k, f), format('<', 'd', w)
      local vals = {}
      if blob then vals = {struct.unpack(doubles, blob)} else for j = 1, w do vals[j] = 0 end end
      local q = i + 4
      while ARGV[q] ~= '|' do
        local slot = tonumber(ARGV[q]) + 1
        if slot < 1 or slot > w then error('slot ' .. (slot - 1) .. ' of a vector of ' .. w, 0) end
        vals[slot] = vals[slot] + tonumber(ARGV[q + 1]); q = q + 2
      end
      put(k, f, struct.pack(doubles, unpack(vals, 1, w))); i = q + 1
    elseif op == 's' then
      put(k, ARGV[i + 2], ARGV[i + 3]); i = i + 4
    elseif op == 'x' then
      local seconds = tonumber(ARGV[i + 2])
      -- EXPIRE takes whole seconds, and more than this overflows it: refused here, not at the end.
      if seconds == nil or seconds < 1 or seconds > 2 ^ 40 then
        error('expiry of ' .. tostring(ARGV[i + 2]) .. ' s', 0)
      end
      expiries[#expiries + 1] = {k, string.format('%d', seconds)}; i = i + 4
    elseif op == 't' then
      -- Mirror of features.packing.add_to_recent (then pack_recent) on a blob kept in 64-byte chunks
      -- (split_blob / join_blob).
      local f = ARGV[i + 2]
      local t, tau, cap = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
      local chunks = {f, f .. '1', f .. '2', f .. '3'}
      local got
      if new[k] == nil and held.new[k] == nil then got = read(k, 'HMGET', unpack(chunks)) else
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
        local n = math.floor((#blob - 8) / 8)  -- whole (id, value) entries after the time
        local got = {struct.unpack(format('<d', 'If', n), blob)}
        last = got[1]
        for j = 1, n do ids[j] = got[2 * j]; vals[j] = got[2 * j + 1] end
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
      local order, singles = {}, format('<', 'f', #ids)
      local r32 = {struct.unpack(singles, struct.pack(singles, unpack(vals)))}  -- as stored: float32
      for j = 1, #ids do order[j] = j end
      table.sort(order, function(a, b)
        if r32[a] ~= r32[b] then return r32[a] > r32[b] end
        return ids[a] < ids[b]
      end)
      local kept, values = math.min(cap, #order), {last}
      for m = 1, kept do values[2 * m] = ids[order[m]]; values[2 * m + 1] = vals[order[m]] end
      local out = struct.pack(format('<d', 'If', kept), unpack(values, 1, 2 * kept + 1))
      if #out > 64 * #chunks then
        error('a tally of ' .. kept .. ' entries does not fit ' .. #chunks .. ' chunks', 0)
      end
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
local function hold()
  for _, k in ipairs(written) do
    if held.new[k] == nil then held.new[k] = {}; held.fields[k] = {}; held.written[#held.written + 1] = k end
    for _, f in ipairs(fields[k]) do
      if held.new[k][f] == nil then held.fields[k][#held.fields[k] + 1] = f end
      held.new[k][f] = new[k][f]
    end
  end
  for _, e in ipairs(expiries) do held.expiries[#held.expiries + 1] = e end
end
local function write()
  for _, k in ipairs(held.written) do
    local set, gone = {}, {}
    for _, f in ipairs(held.fields[k]) do
      local v = held.new[k][f]
      if v then set[#set + 1] = f; set[#set + 1] = v else gone[#gone + 1] = f end
    end
    -- Sets before deletes: a hash never empties on the way (Redis would drop it, and its TTL with it).
    -- In slices: unpack has a stack of about 8,000 values, and an error here would come after writes.
    for lo = 1, #set, 1000 do redis.call('HSET', k, unpack(set, lo, math.min(lo + 999, #set))) end
    for lo = 1, #gone, 500 do redis.call('HDEL', k, unpack(gone, lo, math.min(lo + 499, #gone))) end
  end
  local last = {}  -- the last expiry asked of each key is the one that holds
  for _, e in ipairs(held.expiries) do last[e[1]] = e[2] end
  for _, e in ipairs(held.expiries) do
    if last[e[1]] then redis.call('EXPIRE', e[1], last[e[1]]); last[e[1]] = nil end
  end
end
local out, i = {}, 2
while i <= #ARGV do
  local marker, last = KEYS[tonumber(ARGV[i])], i + 1 + tonumber(ARGV[i + 1])
  if not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    out[#out + 1] = 0
  else
    new, written, fields, expiries = {}, {}, {}, {}
    local ok, err = pcall(compute, i + 2, last)
    if ok then
      hold()
      out[#out + 1] = 1
    else
      redis.call('DEL', marker)
      if type(err) == 'table' then err = err.err end
      out[#out + 1] = 'BADEVENT ' .. tostring(err)
    end
  end
  i = last + 1
end
write()
return out

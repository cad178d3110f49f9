-- What the stream's cap trimmed before a consumer group read it (features.losses.cap_gap).
-- KEYS[1]: the stream; ARGV[1]: the consumer group; ARGV[2]: "take" to move the group past the gap (a reader
-- counting it), anything else to look only (/readyz).
--
-- Behind: the group's last delivered id lies before the stream's first entry (or the stream is empty and it
-- lies before the last id generated): every entry between was trimmed unread. The group is moved to just
-- before the first entry, with its read counter set to match on Redis 7, whose own counter only ever adds
-- one per entry delivered and would otherwise count the gap again, and overstate the group's lag, for ever.
-- Caught up (Redis 7): the last delivered id is the stream's last, yet the read counter is short of the
-- entries added: the group read past a gap before anyone looked. The counter is set right.
-- Returns {last delivered id, entries lost (-1: Redis 6.2 cannot count them), entries still to read}, or
-- false when there is no gap. One script, so of all the group's readers one counts each gap. On 6.2 a gap
-- may have lost nothing: the cap can trim the group's last read entry while keeping everything after it,
-- and 6.2 cannot tell that from a loss.

local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end

local group
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = fields(g)
  if f['name'] == ARGV[1] then
    group = f
  end
end
if not group then
  return false
end
local last = group['last-delivered-id']
if last == '0-0' then
  return false -- a group that has read nothing is not judged: it may have been created after the trims
end
local s = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
local added, read, length = s['entries-added'], group['entries-read'], s['length']
local newest = s['last-generated-id']

if last == newest then
  if added and read and read < added then
    if ARGV[2] == 'take' then
      redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added)
    end
    return {last, added - read, 0}
  end
  return false
end

-- Where the group's reads resume: just before the first entry (a group this script moved sits there), or
-- after the newest id when the stream is empty.
local head = newest
if s['first-entry'] then
  local ms, seq = parse(s['first-entry'][1])
  if seq > 0 then
    head = string.format('%.0f-%.0f', ms, seq - 1)
  else
    head = string.format('%.0f-18446744073709551615', ms - 1)
  end
end
if not before(last, head) then
  return false
end
if added then
  local lost = -1
  if read then
    lost = added - read - length
    if lost <= 0 then
      return false -- the cap trimmed the group's last read entry, and nothing after it
    end
  end
  if ARGV[2] == 'take' then
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], head, 'ENTRIESREAD', added - length)
  end
  return {last, lost, length}
end
if ARGV[2] == 'take' then
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], head)
end
return {last, -1, length}

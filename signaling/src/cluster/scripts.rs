//! The Lua scripts that change a session in Redis, each atomic. Every one touches only the
//! keys of one session (its hash and its members hash share a hash tag) and the session
//! counter, and publishes the event it makes to the channels of the nodes concerned, in
//! the same atomic step, so each node sees a session's events in the order they happened.
//!
//! Keys: `KEYS[1]` the session hash (`pw`, `ev`), `KEYS[2]` its members hash,
//! `KEYS[3]` the session counter (`ps:nsessions`).

/// Join, create or resume.
///
/// `ARGV`: 1 create (`1`: create a missing session; `2`: create asked for with a code that
/// may not be created, so a missing session is `7006`; `0`: no create; with `1` or `2` an
/// existing session is `7015`), 2 exists-ok (`1`: a valid resume may find the session
/// existing with create), 3 password tag (empty: none), 4 new client ID, 5 node, 6 relay
/// (`1`/`0`), 7 name, 8 peers per session, 9 TTL in seconds, 10 the ID to resume (empty:
/// none), 11 session code.
///
/// Returns `{"e", CODE}` (7005, 7006, 7007, 7015, or `dup` for an ID in use), or
/// `{"ok", ID, EV, PW, ID1, RECORD1, …}`: the ID, the event number of this join, the
/// session's password tag, and every member with its record (this one included).
pub(crate) const JOIN: &str = r#"
local meta, mem = KEYS[1], KEYS[2]
local session, node = ARGV[11], ARGV[5]
if redis.call('EXISTS', meta) == 1 then
  if ARGV[1] ~= '0' and ARGV[2] ~= '1' then return {'e', '7015'} end
  local tag = redis.call('HGET', meta, 'pw') or ''
  if tag ~= '' and tag ~= ARGV[3] then return {'e', '7007'} end
else
  if ARGV[1] ~= '1' then return {'e', '7006'} end
  redis.call('HSET', meta, 'pw', ARGV[3], 'ev', 0)
  redis.call('INCR', KEYS[3])
end
local id = ARGV[4]
local old = false
if ARGV[10] ~= '' then
  id = ARGV[10]
  old = redis.call('HGET', mem, id)
end
if not old then
  if redis.call('HLEN', mem) >= tonumber(ARGV[8]) then return {'e', '7005'} end
  if redis.call('HEXISTS', mem, id) == 1 then return {'e', 'dup'} end
end
local ev = redis.call('HINCRBY', meta, 'ev', 1)
local relay, name, msg = ARGV[6], ARGV[7], nil
local nodes = {}
nodes[node] = true
if old then
  local n1 = string.find(old, '\n', 1, true)
  local n2 = string.find(old, '\n', n1 + 1, true)
  local n3 = string.find(old, '\n', n2 + 1, true)
  relay = string.sub(old, n2 + 1, n3 - 1)
  name = string.sub(old, n3 + 1)
  nodes[string.sub(old, 1, n1 - 1)] = true
  msg = 'M\n' .. session .. '\n' .. id .. '\n' .. ev .. '\n' .. node
else
  msg = 'J\n' .. session .. '\n' .. id .. '\n' .. ev .. '\n' .. node .. '\n' .. relay .. '\n' .. name
end
redis.call('HSET', mem, id, node .. '\n' .. ev .. '\n' .. relay .. '\n' .. name)
redis.call('EXPIRE', meta, ARGV[9])
redis.call('EXPIRE', mem, ARGV[9])
local all = redis.call('HGETALL', mem)
for i = 2, #all, 2 do nodes[string.match(all[i], '^[^\n]*')] = true end
for n, _ in pairs(nodes) do redis.call('PUBLISH', 'ps:node:' .. n, msg) end
local out = {'ok', id, tostring(ev), redis.call('HGET', meta, 'pw') or ''}
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#;

/// Remove a member if its record still names `ARGV[3]` as its node (and, unless empty,
/// `ARGV[4]` as the event number of its join): a member leaving, or the members of a
/// node whose heartbeat expired. The others' nodes and `ARGV[5]` (the caller's node)
/// get `L`; an empty session is deleted.
///
/// `ARGV`: 1 session code, 2 ID, 3 node, 4 join event number or empty, 5 caller's node.
/// Returns 1 if the member was removed, else 0.
pub(crate) const REMOVE: &str = r#"
local rec = redis.call('HGET', KEYS[2], ARGV[2])
if not rec then return 0 end
local n1 = string.find(rec, '\n', 1, true)
local n2 = string.find(rec, '\n', n1 + 1, true)
if string.sub(rec, 1, n1 - 1) ~= ARGV[3] then return 0 end
if ARGV[4] ~= '' and string.sub(rec, n1 + 1, n2 - 1) ~= ARGV[4] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
local msg = 'L\n' .. ARGV[1] .. '\n' .. ARGV[2] .. '\n' .. ev
local all = redis.call('HVALS', KEYS[2])
local nodes = {}
nodes[ARGV[5]] = true
for i = 1, #all do nodes[string.match(all[i], '^[^\n]*')] = true end
for n, _ in pairs(nodes) do redis.call('PUBLISH', 'ps:node:' .. n, msg) end
if #all == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('DECR', KEYS[3])
end
return 1
"#;

/// Write back what a node knows of a session after Redis lost it (a restart without
/// persistence): the session hash if missing (event numbers never go back), and the
/// node's own members if missing. Publishes nothing.
///
/// `ARGV`: 1 password tag, 2 the last event number the node saw, 3 TTL, then pairs of
/// ID and record.
pub(crate) const RESTORE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'pw', ARGV[1], 'ev', ARGV[2])
  redis.call('INCR', KEYS[3])
elseif tonumber(redis.call('HGET', KEYS[1], 'ev') or '0') < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'ev', ARGV[2])
end
for i = 4, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"#;

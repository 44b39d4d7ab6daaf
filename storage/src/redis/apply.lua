-- Applies store operations atomically: KEYS are the namespaced keys, ARGV[1]
-- the namespace, ARGV[2] the watch channel, then five arguments per key:
-- the operation and its arguments. Every write publishes the change on the
-- watch channel. Integers are bincode's (varint, zigzag) i64, handled as
-- sign and magnitude in two 32-bit halves so that all 64 bits stay exact
-- in Lua's doubles.
local P32 = 4294967296
local H63 = 2147483648
local ns, chan = ARGV[1], ARGV[2]

local function rd(s, pos, n)
  local v = 0
  for i = n, 1, -1 do v = v * 256 + string.byte(s, pos + i - 1) end
  return v
end

local function wr(v, n)
  local t = {}
  for i = 1, n do t[i] = string.char(v % 256); v = math.floor(v / 256) end
  return table.concat(t)
end

-- Returns negative, high, low of the magnitude; nil when not an i64.
local function dec(s)
  if not s then return false, 0, 0 end
  local n = #s
  if n == 0 then return nil end
  local b = string.byte(s, 1)
  local hi, lo
  if b < 251 then
    if n ~= 1 then return nil end
    hi, lo = 0, b
  elseif b == 251 then
    if n ~= 3 then return nil end
    hi, lo = 0, rd(s, 2, 2)
  elseif b == 252 then
    if n ~= 5 then return nil end
    hi, lo = 0, rd(s, 2, 4)
  elseif b == 253 then
    if n ~= 9 then return nil end
    lo, hi = rd(s, 2, 4), rd(s, 6, 4)
  else
    return nil
  end
  local odd = lo % 2
  lo = math.floor(lo / 2) + (hi % 2) * H63
  hi = math.floor(hi / 2)
  if odd == 1 then
    lo = lo + 1
    if lo == P32 then lo = 0; hi = hi + 1 end
    return true, hi, lo
  end
  return false, hi, lo
end

local function enc(neg, hi, lo)
  lo = lo * 2; hi = hi * 2
  if lo >= P32 then lo = lo - P32; hi = hi + 1 end
  if neg then
    if lo == 0 then lo = P32 - 1; hi = hi - 1 else lo = lo - 1 end
  end
  if hi == 0 and lo < 251 then return string.char(lo) end
  if hi == 0 and lo < 65536 then return string.char(251) .. wr(lo, 2) end
  if hi == 0 then return string.char(252) .. wr(lo, 4) end
  return string.char(253) .. wr(lo, 4) .. wr(hi, 4)
end

-- Adds two sign-magnitude numbers; nil on overflow of i64.
local function add(an, ah, al, bn, bh, bl)
  if an == bn then
    local lo, hi = al + bl, ah + bh
    if lo >= P32 then lo = lo - P32; hi = hi + 1 end
    if hi > H63 or (hi == H63 and (lo > 0 or not an)) then return nil end
    return an, hi, lo
  end
  if ah == bh and al == bl then return false, 0, 0 end
  if ah < bh or (ah == bh and al < bl) then
    an, ah, al, bh, bl = bn, bh, bl, ah, al
  end
  local lo, hi = al - bl, ah - bh
  if lo < 0 then lo = lo + P32; hi = hi - 1 end
  return an, hi, lo
end

local function note(kind, key, value)
  local user = string.sub(key, #ns + 1)
  redis.call('PUBLISH', chan, kind .. struct.pack('>I4', #user) .. user .. (value or ''))
end

local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local j = 2 + (i - 1) * 5
  local op, a, b, c, d = ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], ARGV[j + 5]
  if op == 'g' then
    local v = redis.call('GET', k)
    if v then out[i] = {'v', v} else out[i] = {'n'} end
  elseif op == 'c' then
    out[i] = {'b', redis.call('EXISTS', k)}
  elseif op == 's' then
    if b == '' then redis.call('SET', k, a) else redis.call('SET', k, a, 'PX', b) end
    note('s', k, a)
    out[i] = {'d'}
  elseif op == 'x' then
    local n = redis.call('DEL', k)
    if n == 1 then note('x', k) end
    out[i] = {'b', n}
  elseif op == 'i' then
    local cur = redis.call('GET', k)
    local an, ah, al = dec(cur)
    if an == nil then
      out[i] = {'e', 'nan'}
    else
      local bn, bh, bl = dec(a)
      local rn, rh, rl = add(an, ah, al, bn, bh, bl)
      if rn == nil then
        out[i] = {'e', 'ovf'}
      else
        local v = enc(rn, rh, rl)
        if cur then redis.call('SET', k, v, 'KEEPTTL') else redis.call('SET', k, v) end
        note('s', k, v)
        out[i] = {'i', v}
      end
    end
  elseif op == 'w' then
    local cur = redis.call('GET', k)
    if (a == '0' and not cur) or (a == '1' and cur == b) then
      if c == '1' then
        redis.call('SET', k, d)
        note('s', k, d)
      elseif cur then
        redis.call('DEL', k)
        note('x', k)
      end
      out[i] = {'b', 1}
    else
      out[i] = {'b', 0}
    end
  end
end
return out

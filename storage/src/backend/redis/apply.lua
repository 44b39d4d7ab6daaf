-- Applies store operations atomically: KEYS are the namespaced keys, ARGV[1]
-- the namespace, ARGV[2] the watch channel, then five arguments per key:
-- the operation and its arguments. Every write publishes the change on the
-- watch channel. A counter is a marked integer (yuki_channel::codec::mark):
-- a byte naming its type, then bincode's encoding of it (u8 and i8 one raw
-- byte, wider types a varint, zigzag when signed). Numbers are handled as
-- sign and magnitude in two 32-bit halves so that all 64 bits stay exact in
-- Lua's doubles.
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

-- Reads a varint that fills s from pos: high, low; nil when it does not.
local function varint(s, pos)
  local n = #s - pos + 1
  if n < 1 then return nil end
  local b = string.byte(s, pos)
  if b < 251 then
    if n ~= 1 then return nil end
    return 0, b
  elseif b == 251 then
    if n ~= 3 then return nil end
    return 0, rd(s, pos + 1, 2)
  elseif b == 252 then
    if n ~= 5 then return nil end
    return 0, rd(s, pos + 1, 4)
  elseif b == 253 then
    if n ~= 9 then return nil end
    return rd(s, pos + 5, 4), rd(s, pos + 1, 4)
  end
  return nil
end

local function putvarint(hi, lo)
  if hi == 0 and lo < 251 then return string.char(lo) end
  if hi == 0 and lo < 65536 then return string.char(251) .. wr(lo, 2) end
  if hi == 0 then return string.char(252) .. wr(lo, 4) end
  return string.char(253) .. wr(lo, 4) .. wr(hi, 4)
end

-- Zigzag to negative, high, low of the magnitude.
local function unzig(hi, lo)
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

local function zig(neg, hi, lo)
  lo = lo * 2; hi = hi * 2
  if lo >= P32 then lo = lo - P32; hi = hi + 1 end
  if neg then
    if lo == 0 then lo = P32 - 1; hi = hi - 1 else lo = lo - 1 end
  end
  return hi, lo
end

-- The type bytes of the counters: unsigned, then signed, 8 to 64 bits.
local U8, U64, I8 = 1, 4, 6
local SIGNED = {[6] = true, [7] = true, [8] = true, [9] = true}
-- The largest magnitude each type holds, negative then positive, as
-- high, low; a u64 result stops at i64's maximum, which incr returns.
local LIMIT = {
  [1] = {0, 0, 0, 255}, [2] = {0, 0, 0, 65535}, [3] = {0, 0, 0, P32 - 1},
  [4] = {0, 0, H63 - 1, P32 - 1},
  [6] = {0, 128, 0, 127}, [7] = {0, 32768, 0, 32767}, [8] = {0, H63, 0, H63 - 1},
  [9] = {H63, 0, H63 - 1, P32 - 1},
}

local function fits(t, neg, hi, lo)
  local l = LIMIT[t]
  local mh, ml = l[3], l[4]
  if neg then mh, ml = l[1], l[2] end
  return hi < mh or (hi == mh and lo <= ml)
end

-- Reads a counter: its type byte, negative, high, low; a missing one is a
-- new i64 0; nil when the value is not an integer of at most 64 bits.
local function counter(s)
  if not s then return 9, false, 0, 0 end
  if #s < 2 then return nil end
  local t = string.byte(s, 1)
  if not LIMIT[t] then return nil end
  if t == U8 or t == I8 then
    if #s ~= 2 then return nil end
    local b = string.byte(s, 2)
    if t == I8 and b >= 128 then return t, true, 0, 256 - b end
    return t, false, 0, b
  end
  local hi, lo = varint(s, 2)
  if hi == nil then return nil end
  local neg = false
  if SIGNED[t] then neg, hi, lo = unzig(hi, lo) end
  -- Any u64 is read; only a result is held to i64's maximum.
  if t ~= U64 and not fits(t, neg, hi, lo) then return nil end
  return t, neg, hi, lo
end

local function encode(t, neg, hi, lo)
  if t == U8 then return string.char(t, lo) end
  if t == I8 then
    if neg then return string.char(t, 256 - lo) end
    return string.char(t, lo)
  end
  if SIGNED[t] then hi, lo = zig(neg, hi, lo) end
  return string.char(t) .. putvarint(hi, lo)
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
    local t, an, ah, al = counter(cur)
    local bh, bl = varint(a, 1)
    if t == nil or bh == nil then
      out[i] = {'e', 'nan'}
    else
      local bn
      bn, bh, bl = unzig(bh, bl)
      local rn, rh, rl = add(an, ah, al, bn, bh, bl)
      if rn == nil or not fits(t, rn, rh, rl) then
        out[i] = {'e', 'ovf'}
      else
        local v = encode(t, rn, rh, rl)
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
  elseif op == 't' then
    out[i] = {'t', redis.call('PTTL', k)}
  elseif op == 'e' then
    if a == '0' then
      -- As EXPIRE does with a deadline that has passed: the key goes now.
      local n = redis.call('DEL', k)
      if n == 1 then note('x', k) end
      out[i] = {'b', n}
    else
      out[i] = {'b', redis.call('PEXPIRE', k, a)}
    end
  elseif op == 'p' then
    out[i] = {'b', redis.call('PERSIST', k)}
  end
end
return out

-- Dynamic backends for the lab's ingress controller, as ingress-nginx keeps them
-- (rootfs/etc/nginx/lua/balancer.lua and configuration.lua there).
--
-- Every proxied location sets $proxy_upstream_name and proxies to the one upstream
-- "upstream_balancer", whose balancer_by_lua picks the endpoint. The endpoints of each
-- backend (a Service port) live in the shared dict "configuration_data", written by a POST
-- of the whole list to /configuration/backends on the pod's loopback (the controller does
-- it, never nginx.conf): an endpoint change is a POST, not a reload. Each worker parses the
-- list again when its version moves on, and balances round robin (ingress-nginx's default)
-- or by EWMA of response times (annotation nginx.ingress.kubernetes.io/load-balance: ewma,
-- two random choices, the lower score wins, as ingress-nginx's ewma.lua).

local cjson = require("cjson.safe")
local ngx_balancer = require("ngx.balancer")

local _M = {}

local backends = {} -- this worker's copy: name -> {endpoints = {{address, port}...}, lb = "round_robin" | "ewma"}
local version = -1 -- of the shared list this worker parsed last
local next_index = {} -- round robin position per backend
local ewma = {} -- "address:port" -> {score = seconds, at = ngx.now()}
local DECAY = 10 -- seconds: ingress-nginx's ewma decay time

local function valid(list)
  if type(list) ~= "table" then
    return nil, "expected a list of backends"
  end
  local out = {}
  for i, b in ipairs(list) do
    if type(b) ~= "table" or type(b.name) ~= "string" or type(b.endpoints) ~= "table" then
      return nil, "backend " .. i .. ": expected name and endpoints"
    end
    local lb = b["load-balance"] or "round_robin"
    if lb ~= "round_robin" and lb ~= "ewma" then
      return nil, "backend " .. b.name .. ": load-balance must be round_robin or ewma"
    end
    local eps = {}
    for j, e in ipairs(b.endpoints) do
      if type(e) ~= "table" or type(e.address) ~= "string" or not e.address:match("^[%x.:]+$")
          or type(e.port) ~= "number" or e.port < 1 or e.port > 65535 then
        return nil, "backend " .. b.name .. ": endpoint " .. j .. " is not an address and a port"
      end
      eps[#eps + 1] = {address = e.address, port = e.port}
    end
    out[b.name] = {endpoints = eps, lb = lb}
  end
  return out
end

local function sync()
  local data = ngx.shared.configuration_data
  local v = data:get("version") or 0
  if v == version then
    return
  end
  local parsed = valid(cjson.decode(data:get("backends") or "[]"))
  backends = parsed or {}
  version = v
end

-- POST /configuration/backends: the whole list, JSON. GET: what this worker balances over.
function _M.configure()
  if ngx.req.get_method() == "GET" then
    sync()
    ngx.header.content_type = "application/json"
    return ngx.print(cjson.encode({version = version, backends = backends}))
  end
  if ngx.req.get_method() ~= "POST" then
    ngx.status = ngx.HTTP_NOT_ALLOWED
    return ngx.print("only GET and POST\n")
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    ngx.status = ngx.HTTP_BAD_REQUEST
    return ngx.print("no body (or one larger than client_body_buffer_size)\n")
  end
  local ok, err = valid(cjson.decode(body))
  if not ok then
    ngx.status = ngx.HTTP_BAD_REQUEST
    return ngx.print(err, "\n")
  end
  local data = ngx.shared.configuration_data
  local stored, serr = data:set("backends", body)
  if not stored then
    ngx.status = ngx.HTTP_INTERNAL_SERVER_ERROR
    return ngx.print("cannot store the backends: ", serr, "\n")
  end
  data:incr("version", 1, 0)
  ngx.status = ngx.HTTP_CREATED
  return ngx.print("ok\n")
end

-- rewrite phase of a proxied location: a backend without endpoints answers 503, as
-- ingress-nginx's balancer.rewrite does.
function _M.rewrite()
  sync()
  local b = backends[ngx.var.proxy_upstream_name or ""]
  if not b or #b.endpoints == 0 then
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
  end
  ngx.ctx.backend = b -- balance() uses this very list: a POST meanwhile cannot empty it under the request
end

local function score(e)
  local s = ewma[e.address .. ":" .. e.port]
  if not s then
    return 0
  end
  return s.score * math.exp(-(ngx.now() - s.at) / DECAY)
end

local function pick(name, b)
  local eps = b.endpoints
  if b.lb == "ewma" and #eps > 1 then
    local i = math.random(#eps)
    local j = math.random(#eps - 1)
    if j >= i then
      j = j + 1
    end
    if score(eps[j]) < score(eps[i]) then
      i = j
    end
    return eps[i]
  end
  local i = (next_index[name] or 0) % #eps + 1
  next_index[name] = i
  return eps[i]
end

-- balancer_by_lua of upstream_balancer: one endpoint per try; a failed try (the endpoint
-- went away) is tried again on the next one, up to proxy_next_upstream_tries.
function _M.balance()
  local name = ngx.var.proxy_upstream_name or ""
  local ctx = ngx.ctx
  local b = ctx.backend or backends[name]
  if not b or #b.endpoints == 0 then -- rewrite() answered 503 already; this cannot happen after it
    return ngx.exit(ngx.ERROR)
  end
  if not ctx.balanced then
    ctx.balanced = true
    if #b.endpoints > 1 then
      ngx_balancer.set_more_tries(math.min(#b.endpoints, 3) - 1)
    end
  end
  local e = pick(name, b)
  local ok, err = ngx_balancer.set_current_peer(e.address, e.port)
  if not ok then
    ngx.log(ngx.ERR, "set_current_peer ", e.address, ":", e.port, ": ", err)
    return ngx.exit(ngx.ERROR)
  end
end

-- log phase: the EWMA of each endpoint's response time (only backends that use it).
function _M.log()
  local b = backends[ngx.var.proxy_upstream_name or ""]
  if not b or b.lb ~= "ewma" then
    return
  end
  local addr = (ngx.var.upstream_addr or ""):match("([^,%s]+)%s*$")
  local rt = tonumber(((ngx.var.upstream_response_time or ""):match("([^,%s]+)%s*$")))
  if not addr or not rt then
    return
  end
  local now = ngx.now()
  local s = ewma[addr]
  if not s then
    ewma[addr] = {score = rt, at = now}
    return
  end
  local w = math.exp(-(now - s.at) / DECAY)
  s.score = s.score * w + rt * (1 - w)
  s.at = now
end

return _M

#!/usr/bin/env bash
# Starts, stops and reports a private RabbitMQ (+ management, prometheus plugins) and a
# SeaweedFS S3 server as plain background processes on loopback, each with its own data dir
# under STATE and stopped by PID.
#   servers.sh up     STATE [fixed|free]   start (fixed ports for `make up`, free ones for tests)
#   servers.sh down   STATE                stop by PID, wait until gone
#   servers.sh status STATE
# After `up`, STATE/env holds AERIAL__* settings and the generated credentials (mode 600).
set -euo pipefail
cmd=${1:?usage: servers.sh up|down|status STATE [fixed|free]}
STATE=$(realpath -m "${2:?state dir}")
MODE=${3:-fixed}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEED=${WEED:-$ROOT/.venv/bin/weed}
RMQ_BIN=/usr/lib/rabbitmq/bin
say() { printf '[servers] %s\n' "$*"; }

# a free base port in [20000, 45000) such that base+OFFSETS are all free too
# A base port whose offsets are all free, every one below the kernel's ephemeral range:
# a port in that range can be taken by any outgoing connection between this check and the
# server's bind (seen: SeaweedFS's gRPC port lost to one, "address already in use").
free_port() { python3 - "$@" <<'PY'
import random, socket, sys
offs = [0] + [int(o) for o in sys.argv[1:]]
try:
    eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    eph = 32768
top = max(eph - max(offs), 10001)
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    b = random.randrange(10000, top)
    if all(free(b + o) for o in offs):
        print(b); break
PY
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

assign_ports() {
  [ -f "$STATE/ports" ] && return
  mkdir -p "$STATE"
  if [ "$MODE" = fixed ]; then
    cat > "$STATE/ports" <<P
AMQP_PORT=35672
MGMT_PORT=35673
RMQ_PROM_PORT=35692
EPMD_PORT=35369
S3_PORT=38333
P
  else
    local a s; a=$(free_port 1 2 3 20000); s=$(free_port 1 2 3 5 10001 10002 10003 10004)
    { echo "AMQP_PORT=$a"; echo "MGMT_PORT=$((a+1))"; echo "RMQ_PROM_PORT=$((a+2))"
      echo "EPMD_PORT=$((a+3))"; echo "S3_PORT=$s"; } > "$STATE/ports"
  fi
}

credentials() {
  # generated once per state dir: never guest/guest
  if [ -f "$STATE/credentials" ] && ! grep -q '^AMQP_ADMIN_USER=' "$STATE/credentials"; then
    say "$STATE was made by an older aerial (one broker user for everything): 'make clean' and retry"
    exit 1
  fi
  if [ ! -f "$STATE/credentials" ]; then
    umask 077
    python3 - > "$STATE/credentials" <<'PY'
import secrets
print(f"AMQP_USER=aerial\nAMQP_PASS={secrets.token_urlsafe(18)}")
print(f"AMQP_ADMIN_USER=aerial-admin\nAMQP_ADMIN_PASS={secrets.token_urlsafe(18)}")
print(f"S3_ACCESS_KEY=aerial{secrets.token_hex(6)}\nS3_SECRET_KEY={secrets.token_urlsafe(24)}")
PY
  fi
  # the dashboard's write token (labelling, retraining); added to state dirs made before it
  if ! grep -q '^DASHBOARD_TOKEN=' "$STATE/credentials"; then
    (umask 077; python3 -c 'import secrets; print(f"DASHBOARD_TOKEN={secrets.token_urlsafe(24)}")' >> "$STATE/credentials")
  fi
}

# +sbwt none...: Erlang schedulers otherwise spin-wait for work, CPU that the services
# sharing this machine's cores (inference above all) lose
rmq_env() {
  local R=$STATE/rabbitmq
  export HOME=$R/home RABBITMQ_NODENAME=rmq$AMQP_PORT@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$AMQP_PORT RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000)) \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none" \
    ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT \
    RABBITMQ_MNESIA_BASE=$R/mnesia RABBITMQ_LOG_BASE=$R/log RABBITMQ_CONFIG_FILE=$R/rabbitmq.conf \
    RABBITMQ_ENABLED_PLUGINS_FILE=$R/enabled_plugins RABBITMQ_PID_FILE=$R/rabbitmq.pid
}

start_rabbitmq() {
  local R=$STATE/rabbitmq
  if alive "$R/rabbitmq.pid"; then say "rabbitmq already running (pid $(cat "$R/rabbitmq.pid"))"; return; fi
  mkdir -p "$R/home" "$R/mnesia" "$R/log"
  if [ ! -f "$R/home/.erlang.cookie" ]; then
    python3 -c 'import secrets; print(secrets.token_hex(16).upper(), end="")' > "$R/home/.erlang.cookie"
    chmod 400 "$R/home/.erlang.cookie"
  fi
  # RabbitMQ's default 30 min for `make up`; tests use the shortest the broker enforces
  # (checked once a minute) so that jobs longer than it run in every test run
  local CONSUMER_TIMEOUT_MS=1800000
  if [ "$MODE" = free ]; then CONSUMER_TIMEOUT_MS=${AERIAL_TEST_CONSUMER_TIMEOUT_MS:-60000}; fi
  cat > "$R/rabbitmq.conf" <<C
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $RMQ_PROM_PORT
default_user = $AMQP_ADMIN_USER
default_pass = $AMQP_ADMIN_PASS
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
consumer_timeout = $CONSUMER_TIMEOUT_MS
C
  echo '[rabbitmq_management,rabbitmq_prometheus].' > "$R/enabled_plugins"
  ( rmq_env
    setsid nohup epmd -address 127.0.0.1 -port "$EPMD_PORT" > "$R/log/epmd.log" 2>&1 &
    echo $! > "$R/epmd.pid"
    setsid nohup "$RMQ_BIN/rabbitmq-server" > "$R/log/server.out" 2>&1 &
    echo $! > "$R/server.pid" )
  say "rabbitmq starting: amqp 127.0.0.1:$AMQP_PORT, management 127.0.0.1:$MGMT_PORT, logs $R/log"
}

start_seaweed() {
  local S=$STATE/seaweedfs
  if alive "$S/weed.pid"; then say "seaweedfs already running (pid $(cat "$S/weed.pid"))"; return; fi
  mkdir -p "$S/data"
  umask 077
  cat > "$S/s3.json" <<J
{"identities":[{"name":"aerial","credentials":[{"accessKey":"$S3_ACCESS_KEY","secretKey":"$S3_SECRET_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
J
  umask 022
  local p=$S3_PORT
  # ports derived from the S3 port so one number names the whole server; gRPC = port + 10000.
  # Small volumes: SeaweedFS budgets free disk / volume size and grows 7 volumes per bucket,
  # so 1 GB volumes ran out after a few test buckets on a 40 GB disk.
  setsid nohup "$WEED" server -dir="$S/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=$((p+1)) -master.port.grpc=$((p+10001)) -master.telemetry=false \
    -master.resumeState=false -master.volumeSizeLimitMB=64 \
    -volume.port=$((p+2)) -volume.port.grpc=$((p+10002)) -volume.max=0 -volume.preStopSeconds=0 \
    -filer -filer.port=$((p+3)) -filer.port.grpc=$((p+10003)) -filer.localSocket="$S/filer.sock" \
    -s3 -s3.port=$p -s3.port.grpc=$((p+10004)) -s3.config="$S/s3.json" -s3.localSocket="$S/s3.sock" \
    -s3.port.iceberg=0 -s3.port.lance=0 -metricsIp=127.0.0.1 -metricsPort=$((p+5)) \
    > "$S/weed.log" 2>&1 &
  echo $! > "$S/weed.pid"
  say "seaweedfs starting: s3 http://127.0.0.1:$p, log $S/weed.log"
}

# The services' user: the management tag (queue depths for the metrics service, its own
# vhosts only) and rights on aerial's exchanges and queues in the aerial vhost, nothing else.
AERIAL_PERMS='{"configure":"^(aerial|ingest|featurize|train|score|metrics)\\.","write":"^(aerial|ingest|featurize|train|score|metrics)\\.","read":"^(aerial|ingest|featurize|train|score|metrics)\\."}'
service_user() {
  local api="http://127.0.0.1:$MGMT_PORT/api" a=(-sf -u "$AMQP_ADMIN_USER:$AMQP_ADMIN_PASS" -H 'content-type: application/json')
  curl "${a[@]}" -X PUT "$api/users/$AMQP_USER" -d "{\"password\":\"$AMQP_PASS\",\"tags\":\"management\"}" >/dev/null
  curl "${a[@]}" -X PUT "$api/vhosts/aerial" >/dev/null
  curl "${a[@]}" -X PUT "$api/permissions/aerial/$AMQP_USER" -d "$AERIAL_PERMS" >/dev/null
}

wait_ready() {
  local i
  for i in $(seq 1 120); do
    if curl -sf -u "$AMQP_ADMIN_USER:$AMQP_ADMIN_PASS" "http://127.0.0.1:$MGMT_PORT/api/overview" >/dev/null 2>&1; then break; fi
    alive "$STATE/rabbitmq/server.pid" || { say "rabbitmq died; see $STATE/rabbitmq/log"; tail -20 "$STATE/rabbitmq/log/server.out" >&2; exit 1; }
    sleep 0.5
  done
  curl -sf -u "$AMQP_ADMIN_USER:$AMQP_ADMIN_PASS" "http://127.0.0.1:$MGMT_PORT/api/overview" >/dev/null || { say "rabbitmq not ready after 60 s"; exit 1; }
  service_user
  for i in $(seq 1 120); do
    # any HTTP answer (403 without credentials) means the S3 gateway is up
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" || true)
    [ "$code" != "000" ] && break
    alive "$STATE/seaweedfs/weed.pid" || { say "seaweedfs died; see $STATE/seaweedfs/weed.log"; tail -20 "$STATE/seaweedfs/weed.log" >&2; exit 1; }
    sleep 0.5
  done
  [ "$code" != "000" ] || { say "seaweedfs not ready after 60 s"; exit 1; }
}

write_env() {
  umask 077
  cat > "$STATE/env" <<E
AERIAL__AMQP__URI=amqp://$AMQP_USER:$AMQP_PASS@127.0.0.1:$AMQP_PORT/aerial
AERIAL__S3__ENDPOINT=http://127.0.0.1:$S3_PORT
AERIAL__AMQP__MANAGEMENT_URL=http://127.0.0.1:$MGMT_PORT
AERIAL__S3__ACCESS_KEY=$S3_ACCESS_KEY
AERIAL__S3__SECRET_KEY=$S3_SECRET_KEY
AERIAL__DASHBOARD__TOKEN=$DASHBOARD_TOKEN
AERIAL_RABBITMQ_MANAGEMENT=http://127.0.0.1:$MGMT_PORT
AERIAL_RABBITMQ_PROMETHEUS=http://127.0.0.1:$RMQ_PROM_PORT
AERIAL_AMQP_USER=$AMQP_USER
AERIAL_AMQP_PASS=$AMQP_PASS
AERIAL_AMQP_PERMISSIONS=$AERIAL_PERMS
E
  # the administrator login stays out of the services' env: only tests and operators use it
  cat > "$STATE/admin.env" <<E
AERIAL_AMQP_ADMIN_USER=$AMQP_ADMIN_USER
AERIAL_AMQP_ADMIN_PASS=$AMQP_ADMIN_PASS
E
}

stop_pid() { # pidfile name
  local f=$1 name=$2 i
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 30 s; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    say "$name stopped (pid $pid)"
  fi
  rm -f "$f"
}

case "$cmd" in
  up)
    assign_ports; credentials
    set -a; . "$STATE/ports"; . "$STATE/credentials"; set +a
    start_rabbitmq; start_seaweed; wait_ready; write_env
    say "ready; settings in $STATE/env"
    ;;
  down)
    [ -d "$STATE" ] || { say "nothing to stop in $STATE"; exit 0; }
    if [ -f "$STATE/ports" ]; then set -a; . "$STATE/ports"; set +a; fi
    # beam's own pid file names the real VM process; the wrapper pid may differ
    # both servers stop in parallel (seaweedfs alone takes ~17 s)
    ( stop_pid "$STATE/rabbitmq/rabbitmq.pid" "rabbitmq"
      stop_pid "$STATE/rabbitmq/server.pid" "rabbitmq wrapper"
      stop_pid "$STATE/rabbitmq/epmd.pid" "epmd" ) &
    stop_pid "$STATE/seaweedfs/weed.pid" "seaweedfs"
    wait
    ;;
  # fault injection for the reliability tests; `up` starts whatever is stopped, same ports/data
  stop-rabbitmq)
    stop_pid "$STATE/rabbitmq/rabbitmq.pid" "rabbitmq"
    stop_pid "$STATE/rabbitmq/server.pid" "rabbitmq wrapper"
    stop_pid "$STATE/rabbitmq/epmd.pid" "epmd"
    ;;
  stop-s3)
    stop_pid "$STATE/seaweedfs/weed.pid" "seaweedfs"
    ;;
  status)
    for f in rabbitmq/rabbitmq.pid rabbitmq/epmd.pid seaweedfs/weed.pid; do
      if alive "$STATE/$f"; then echo "running  $f (pid $(cat "$STATE/$f"))"; else echo "stopped  $f"; fi
    done
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac

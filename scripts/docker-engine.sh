# Sourced by compose-test.sh and images.sh: a Docker engine for one run.
#   docker_engine_start DIR   use the running engine, or start one with its data in DIR
#                             (kept between runs: the image cache); sets DOCKER, DOCKER_HOST
#                             and ENGINE_PID (empty when the engine was already running)
#   docker_engine_stop        stops the engine this run started, by its pid
# Debian's docker.io / docker-compose / debootstrap are installed when missing.

docker_engine_start() {
  local dir=$1 need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    echo "[docker] installing ${need[*]} (Debian packages)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } \
      || { echo "[docker] could not install ${need[*]}" >&2; return 1; }
  fi
  # Debian's client matches Debian's engine (a newer client first on PATH works too)
  DOCKER=docker
  [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
  export DOCKER DOCKER_BUILDKIT=1
  ENGINE_PID=
  if $DOCKER info >/dev/null 2>&1; then
    echo "[docker] using the running engine" >&2
    return 0
  fi
  # a private engine without iptables or the default bridge (not allowed here); compose's
  # own networks still work. The exec root holds a unix socket, so its path stays short.
  mkdir -p "$dir/data"
  export DOCKER_HOST=unix://$dir/docker.sock
  local exec_root=/tmp/aerial-dockerd-$(id -u)
  mkdir -p "$exec_root"
  rm -f "$dir/docker.sock"
  dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --data-root "$dir/data" --exec-root "$exec_root" --pidfile "$dir/dockerd.pid" \
    --host "$DOCKER_HOST" >"$dir/dockerd.log" 2>&1 &
  ENGINE_PID=$!
  local _
  for _ in $(seq 100); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.2; done
  if ! $DOCKER info >/dev/null 2>&1; then
    tail -5 "$dir/dockerd.log" >&2
    docker_engine_stop
    echo "[docker] dockerd did not start (log: $dir/dockerd.log)" >&2
    return 1
  fi
  echo "[docker] engine started for this run (pid $ENGINE_PID, data $dir/data)" >&2
}

docker_engine_stop() {
  [ -n "${ENGINE_PID:-}" ] || return 0
  kill "$ENGINE_PID" 2>/dev/null || true
  local _
  for _ in $(seq 75); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$ENGINE_PID" 2>/dev/null || true
  wait "$ENGINE_PID" 2>/dev/null || true
  echo "[docker] engine stopped (pid $ENGINE_PID)" >&2
  ENGINE_PID=
}

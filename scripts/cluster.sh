#!/usr/bin/env bash
# Local 3-node Apache Kafka cluster (KRaft, each node broker+controller) for failover tests and the
# cluster soak, run from the same Maven Central jars as scripts/kafka.sh (fetched by it).
#
#   scripts/cluster.sh up                 start the nodes that are not running; wait until all three
#                                         are voters of the metadata quorum and serving as brokers
#   scripts/cluster.sh down [--purge]     stop every node (--purge: SIGKILL them, delete data, logs, ports)
#   scripts/cluster.sh status             each node: pid, ports; exit 0 only if all three run
#   scripts/cluster.sh bootstrap          print the KAFKA_BOOTSTRAP_SERVERS of the cluster
#   scripts/cluster.sh start|stop|kill N  start node N (1-3) and wait until it serves; stop it
#                                         (SIGTERM: controlled shutdown); SIGKILL it
#   scripts/cluster.sh pid N              the pid of node N, if it runs
#
# Environment:
#   KAFKA_CLUSTER_DIR (<repo>/.kafka/cluster: node-N/{server.properties,data,logs,kafka.pid}, ports)
#   KAFKA_CLUSTER_PORTS            broker ports of nodes 1-3, e.g. 29092,29093,29094
#   KAFKA_CLUSTER_CONTROLLER_PORTS controller ports of nodes 1-3, e.g. 29192,29193,29194
#       Unset: the ports of the previous start of this dir, else free ones (chosen once, remembered)
#   KAFKA_CLUSTER_HEAP_OPTS (-Xms192m -Xmx512m)  KAFKA_START_TIMEOUT (120 s)  KAFKA_VERSION (4.0.2)
#   KAFKA_BROKER_SESSION_TIMEOUT_MS (6000): how long a killed node stays registered (and leads its
#       partitions) before the controller fences it and moves leadership
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_SRC="$ROOT/scripts/kafka"
LIBS="$ROOT/.kafka/libs"
HOME_DIR="$(realpath -m "${KAFKA_CLUSTER_DIR:-$ROOT/.kafka/cluster}")"
PORTS_FILE="$HOME_DIR/ports"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
HEAP_OPTS="${KAFKA_CLUSTER_HEAP_OPTS:--Xms192m -Xmx512m}"
SESSION_TIMEOUT_MS="${KAFKA_BROKER_SESSION_TIMEOUT_MS:-6000}"
NODES=(1 2 3)
TOOL_JVM=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
  "-Dlog4j2.configurationFile=$CONF_SRC/log4j2-tools.xml")

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The jars: scripts/kafka.sh fetches them (once, with Maven) and checks Java.
fetch() { bash "$ROOT/scripts/kafka.sh" fetch >/dev/null; }

run_tool() {  # run_tool CLASS ARGS...
  java "${TOOL_JVM[@]}" -cp "$LIBS/*" "$@"
}

node_dir() { echo "$HOME_DIR/node-$1"; }

# Sets BROKER_PORTS and CONTROLLER_PORTS (arrays of 3): configured, remembered, or free.
load_ports() {
  local brokers="${KAFKA_CLUSTER_PORTS:-}" controllers="${KAFKA_CLUSTER_CONTROLLER_PORTS:-}"
  if [[ -z "$brokers" && -z "$controllers" && -f "$PORTS_FILE" ]]; then
    read -r brokers controllers <"$PORTS_FILE"
  fi
  if [[ -z "$brokers" || -z "$controllers" ]]; then
    [[ -z "$brokers" && -z "$controllers" ]] ||
      die "set both KAFKA_CLUSTER_PORTS and KAFKA_CLUSTER_CONTROLLER_PORTS, or neither"
    local free
    free="$(free_ports 6)"
    brokers="$(cut -d, -f1-3 <<<"$free")"
    controllers="$(cut -d, -f4-6 <<<"$free")"
  fi
  IFS=, read -ra BROKER_PORTS <<<"$brokers"
  IFS=, read -ra CONTROLLER_PORTS <<<"$controllers"
  local p
  [[ ${#BROKER_PORTS[@]} -eq 3 ]] || die "KAFKA_CLUSTER_PORTS: expected 3 ports, got '$brokers'"
  [[ ${#CONTROLLER_PORTS[@]} -eq 3 ]] ||
    die "KAFKA_CLUSTER_CONTROLLER_PORTS: expected 3 ports, got '$controllers'"
  for p in "${BROKER_PORTS[@]}" "${CONTROLLER_PORTS[@]}"; do
    [[ "$p" =~ ^[0-9]+$ && "$p" -ge 1 && "$p" -le 65535 ]] || die "not a port: '$p'"
  done
}

free_ports() {  # free_ports N: N distinct ports nothing listens on, comma-separated
  local chosen=() p
  while ((${#chosen[@]} < $1)); do
    p=$((20000 + RANDOM % 30000))
    [[ " ${chosen[*]} " == *" $p "* ]] && continue
    port_open "$p" || chosen+=("$p")
  done
  (IFS=,; echo "${chosen[*]}")
}

bootstrap() {
  local p addresses=()
  for p in "${BROKER_PORTS[@]}"; do addresses+=("127.0.0.1:$p"); done
  (IFS=,; echo "${addresses[*]}")
}

# Whether the process last launched for node N is alive (also between its fork and its exec of java).
node_alive() {
  local file="$(node_dir "$1")/kafka.pid"
  [[ -f "$file" ]] && kill -0 "$(<"$file")" 2>/dev/null
}

# Prints the pid of node N if it is alive (and is this node's broker, not a recycled pid).
node_pid() {
  local file pid
  file="$(node_dir "$1")/kafka.pid"
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  ps -o args= -p "$pid" 2>/dev/null | grep -qF "kafka.Kafka $(node_dir "$1")/server.properties" || return 1
  echo "$pid"
}

write_props() {  # write_props N
  local n="$1" dir voters="" i
  dir="$(node_dir "$n")"
  for i in "${NODES[@]}"; do
    voters+="${voters:+,}$i@127.0.0.1:${CONTROLLER_PORTS[i - 1]}"
  done
  mkdir -p "$dir/logs"
  cat >"$dir/server.properties" <<EOF
# Written by scripts/cluster.sh on every start; edits are lost.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:${BROKER_PORTS[n - 1]},CONTROLLER://127.0.0.1:${CONTROLLER_PORTS[n - 1]}
advertised.listeners=PLAINTEXT://127.0.0.1:${BROKER_PORTS[n - 1]}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# Production durability: every topic on all three nodes, a write acknowledged by two of them,
# and never a leader that may have missed acknowledged writes.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# Few coordinator partitions: they are created faster, and still spread over the nodes.
offsets.topic.num.partitions=6
transaction.state.log.num.partitions=6
num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=$SESSION_TIMEOUT_MS
EOF
}

format_storage() {  # format_storage N CLUSTER_ID
  local dir
  dir="$(node_dir "$1")"
  [[ -f "$dir/data/meta.properties" ]] && return 0
  if ! run_tool kafka.tools.StorageTool format --cluster-id="$2" -c "$dir/server.properties" \
      >"$dir/logs/format.log" 2>&1; then
    cat "$dir/logs/format.log" >&2
    die "formatting node $1 ($dir/data) failed"
  fi
}

cluster_id() {
  local file="$HOME_DIR/cluster.id"
  # A Kafka Uuid: 16 random bytes, base64url without padding.
  [[ -s "$file" ]] || head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22 >"$file"
  cat "$file"
}

launch() {  # launch N: start node N's JVM in the background, detached from this shell
  local n="$1" dir heap=() extra=() launcher=() pid
  dir="$(node_dir "$n")"
  read -ra heap <<<"$HEAP_OPTS"
  read -ra extra <<<"${KAFKA_OPTS:-}"
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  stat -c %s "$dir/logs/server.log" >"$dir/logs/start.offset" 2>/dev/null || echo 0 >"$dir/logs/start.offset"
  nohup "${launcher[@]}" java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$CONF_SRC/log4j2.xml" "-Dkafka.logs.dir=$dir/logs" "${extra[@]}" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >"$dir/logs/kafka.out" 2>&1 </dev/null 8>&- &
  pid=$!
  echo "$pid" >"$dir/kafka.pid"
  say "node $n started (pid $pid, broker port ${BROKER_PORTS[n - 1]})"
}

# Node ids of the quorum's voters that are caught up (Leader, or Follower with lag 0).
quorum_voters() {
  run_tool org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(bootstrap)" \
    describe --replication 2>/dev/null |
    awk 'NR > 1 && ($NF == "Leader" || ($NF == "Follower" && $4 == 0)) {print $1}' | sort -u
}

# Node ids of the brokers in the cluster's metadata (registered and unfenced) that answer.
serving_brokers() {
  run_tool org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$(bootstrap)" 2>/dev/null |
    sed -n 's/^[^ ]* (id: \([0-9]*\) .*-> (.*/\1/p' | sort -u
}

wait_serving() {  # wait_serving N...: until these nodes are caught-up voters and serving brokers
  local deadline=$((SECONDS + START_TIMEOUT)) n voters brokers missing
  while ((SECONDS < deadline)); do
    missing=""
    for n in "$@"; do
      node_alive "$n" || fail_start "$n" "node $n exited during startup"
      port_open "${BROKER_PORTS[n - 1]}" || missing+=" $n"
    done
    if [[ -z "$missing" ]]; then
      voters=" $(quorum_voters | tr '\n' ' ')"
      brokers=" $(serving_brokers | tr '\n' ' ')"
      for n in "$@"; do
        [[ "$voters" == *" $n "* && "$brokers" == *" $n "* ]] || missing+=" $n"
      done
      [[ -n "$missing" ]] || return 0
    fi
    sleep 1
  done
  fail_start "${missing# }" "node(s)${missing} not in the quorum and serving within ${START_TIMEOUT}s"
}

fail_start() {  # fail_start N MESSAGE
  local dir offset
  dir="$(node_dir "${1%% *}")"
  offset="$(cat "$dir/logs/start.offset" 2>/dev/null || echo 0)"
  say "$2; last lines of $dir/logs/server.log from this start:"
  # server.log is appended to across starts: show only what this start wrote.
  tail -c "+$((offset + 1))" "$dir/logs/server.log" 2>/dev/null | tail -n 30 >&2 || true
  if [[ -s "$dir/logs/kafka.out" ]]; then
    say "last lines of $dir/logs/kafka.out:"
    tail -n 10 "$dir/logs/kafka.out" >&2
  fi
  exit 1
}

check_ports_free() {  # check_ports_free N: node N's ports must not be taken by someone else
  local p
  for p in "${BROKER_PORTS[$1 - 1]}" "${CONTROLLER_PORTS[$1 - 1]}"; do
    if port_open "$p"; then
      { ss -ltnp "sport = :$p" 2>/dev/null || true; } | tail -n +2 >&2
      die "port $p of node $1 is in use by another process; pick others with KAFKA_CLUSTER_PORTS /" \
        "KAFKA_CLUSTER_CONTROLLER_PORTS (or --purge this cluster to choose free ones)"
    fi
  done
}

start_nodes() {  # start_nodes N...: start those not running, then wait for all of them
  local n id
  mkdir -p "$HOME_DIR"
  exec 8>"$HOME_DIR/up.lock"
  command -v flock >/dev/null 2>&1 && flock 8
  fetch
  load_ports
  echo "$(IFS=,; echo "${BROKER_PORTS[*]}") $(IFS=,; echo "${CONTROLLER_PORTS[*]}")" >"$PORTS_FILE"
  id="$(cluster_id)"
  for n in "$@"; do
    node_pid "$n" >/dev/null && continue
    check_ports_free "$n"
    write_props "$n"
    format_storage "$n" "$id"
  done
  for n in "$@"; do
    node_pid "$n" >/dev/null || launch "$n"
  done
  wait_serving "$@"
}

stop_nodes() {  # stop_nodes SIGNAL N...: signal them all at once, wait up to 30 s, then SIGKILL
  local signal="$1" n pid pids=() i
  shift
  for n in "$@"; do
    if pid="$(node_pid "$n")"; then
      kill "-$signal" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for ((i = 0; i < 300; i++)); do
    any_alive "${pids[@]}" || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid still alive after 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  while any_alive "${pids[@]}"; do sleep 0.1; done
  for n in "$@"; do rm -f "$(node_dir "$n")/kafka.pid"; done
}

any_alive() {
  local pid
  for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

node_arg() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "expected a node number 1, 2 or 3, got '${1:-}'"
  echo "$1"
}

cmd_up() {
  start_nodes "${NODES[@]}"
  echo "Kafka cluster ready: 3 nodes, brokers at $(bootstrap) (dir $HOME_DIR)"
  echo "export KAFKA_BOOTSTRAP_SERVERS=$(bootstrap) TOPIC_REPLICATION_FACTOR=3"
}

cmd_down() {
  local purge=0
  case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) die "usage: $0 down [--purge]" ;;
  esac
  # Data about to be deleted needs no controlled shutdown.
  stop_nodes "$( ((purge)) && echo KILL || echo TERM)" "${NODES[@]}"
  echo "Kafka cluster stopped"
  if ((purge)); then
    rm -rf "$HOME_DIR"
    echo "Kafka cluster data, logs and ports deleted ($HOME_DIR)"
  fi
}

cmd_status() {
  [[ -f "$PORTS_FILE" ]] || { echo "Kafka cluster not set up in $HOME_DIR"; return 1; }
  load_ports
  local n pid running=0
  for n in "${NODES[@]}"; do
    if pid="$(node_pid "$n")"; then
      echo "node $n: running (pid $pid) at 127.0.0.1:${BROKER_PORTS[n - 1]}"
      running=$((running + 1))
    else
      echo "node $n: stopped (port ${BROKER_PORTS[n - 1]})"
    fi
  done
  echo "KAFKA_BOOTSTRAP_SERVERS=$(bootstrap)"
  ((running == 3))
}

case "${1:-}" in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  bootstrap) [[ -f "$PORTS_FILE" ]] || die "no cluster in $HOME_DIR: run '$0 up'"; load_ports; bootstrap ;;
  start) start_nodes "$(node_arg "${2:-}")" ;;
  stop) stop_nodes TERM "$(node_arg "${2:-}")" ;;
  kill) stop_nodes KILL "$(node_arg "${2:-}")" ;;
  pid) node_pid "$(node_arg "${2:-}")" ;;
  *) echo "usage: $0 {up|down [--purge]|status|bootstrap|start N|stop N|kill N|pid N}" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller) for development and
# tests, run straight from the Maven Central jars: no Docker needed.
#
#   scripts/kafka.sh fetch              download the jars into <repo>/.kafka/libs (cached)
#   scripts/kafka.sh up                 start the broker and wait until it answers
#   scripts/kafka.sh down [--purge]     stop it (--purge also deletes its data and logs)
#   scripts/kafka.sh status             exit 0 if running, 1 if not
#   scripts/kafka.sh tool CLASS|ALIAS [ARGS...]
#                                       run a Kafka CLI class from the jars; aliases:
#                                       topics, produce, consume, configs, groups, acls, storage
#
# Environment:
#   KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)  KAFKA_SASL_PORT (unset = no SASL listener)
#   KAFKA_HOME_DIR (<repo>/.kafka: properties, data, logs, pid)  KAFKA_START_TIMEOUT (90 s)
#   KAFKA_VERSION (4.0.2)  KAFKA_HEAP_OPTS (-Xms256m -Xmx1g)  KAFKA_OPTS (extra broker JVM flags)
#   KAFKA_SASL_USER / KAFKA_SASL_PASSWORD (admin / admin-secret)
#   KAFKA_ACL_USER / KAFKA_ACL_PASSWORD  turn on ACLs (StandardAuthorizer): the SASL user above and
#                       the PLAINTEXT listener are super users; this extra PLAIN user has only the
#                       ACLs granted to it (e.g. with `scripts/kafka.sh tool acls ...`)
#
# TLS (off unless a TLS port is set; the PLAINTEXT listener on KAFKA_PORT always stays):
#   KAFKA_SSL_PORT        SSL listener on 127.0.0.1 (client certificate per KAFKA_SSL_CLIENT_AUTH)
#   KAFKA_SASL_SSL_PORT   SASL_SSL listener on 127.0.0.1 (TLS + the SASL mechanisms and user above)
#   KAFKA_SSL_KEYSTORE / KAFKA_SSL_KEYSTORE_TYPE (PKCS12) / KAFKA_SSL_KEYSTORE_PASSWORD
#                         the broker's key and certificate (required with a TLS port). Clients
#                         verify the advertised host 127.0.0.1: give the certificate
#                         SAN IP:127.0.0.1 (and DNS:localhost to bootstrap from localhost)
#   KAFKA_SSL_KEY_PASSWORD (= the keystore password)
#   KAFKA_SSL_TRUSTSTORE / KAFKA_SSL_TRUSTSTORE_TYPE (PKCS12) / KAFKA_SSL_TRUSTSTORE_PASSWORD
#                         CAs accepted for client certificates (needed unless client auth is none)
#   KAFKA_SSL_CLIENT_AUTH (none)  none, requested or required, on the SSL listener
# Passwords are written to <home>/server.properties (mode 600) and never printed; only the
# built-in development SASL password is shown when a SASL listener starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_SRC="$ROOT/scripts/kafka"
KAFKA_VERSION="${KAFKA_VERSION:-4.0.2}"
LIBS="$ROOT/.kafka/libs"
STAMP="$LIBS/.fetched-kafka-$KAFKA_VERSION"

HOME_DIR="$(realpath -m "${KAFKA_HOME_DIR:-$ROOT/.kafka}")"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${KAFKA_SASL_PORT:-}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
SASL_USER="${KAFKA_SASL_USER:-admin}"
SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-admin-secret}"
SSL_PORT="${KAFKA_SSL_PORT:-}"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
ACL_USER="${KAFKA_ACL_USER:-}"
ACL_PASSWORD="${KAFKA_ACL_PASSWORD:-}"
SSL_CLIENT_AUTH="${KAFKA_SSL_CLIENT_AUTH:-none}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"

PROPS="$HOME_DIR/server.properties"
PROBE_PROPS="$HOME_DIR/probe.properties"
PID_FILE="$HOME_DIR/kafka.pid"
DATA="$HOME_DIR/data"
LOGS="$HOME_DIR/logs"

# Short-lived CLI JVMs: small heap, C1 only for a faster start.
TOOL_JVM=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
  "-Dlog4j2.configurationFile=$CONF_SRC/log4j2-tools.xml")

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

need_java() {
  command -v java >/dev/null 2>&1 ||
    die "java not found: Kafka $KAFKA_VERSION needs a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)"
  local v major
  v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  major="${v%%.*}"
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] ||
    die "java $v found, but Kafka $KAFKA_VERSION needs Java 17+"
}

m2_writable() {
  local home="${HOME:-}"
  [[ -n "$home" ]] || return 1
  if [[ -d "$home/.m2" ]]; then [[ -w "$home/.m2" ]]; else [[ -w "$home" ]]; fi
}

fetch() {
  [[ -f "$STAMP" ]] && return 0
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found: Maven is needed once to download the Kafka jars (e.g. apt-get install maven)"
  mkdir -p "$ROOT/.kafka"
  # The lock keeps parallel `up`s from fetching at the same time.
  (
    command -v flock >/dev/null 2>&1 && flock 9
    [[ -f "$STAMP" ]] && exit 0
    local repo=()
    m2_writable || repo=("-Dmaven.repo.local=$ROOT/.kafka/m2")
    say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS ..."
    rm -rf "$LIBS.tmp"
    if ! mvn -B -q "${repo[@]}" -f "$CONF_SRC/pom.xml" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$LIBS.tmp" >"$ROOT/.kafka/fetch.log" 2>&1; then
      tail -n 30 "$ROOT/.kafka/fetch.log" >&2
      die "maven could not fetch the Kafka jars (full log: $ROOT/.kafka/fetch.log)"
    fi
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    touch "$STAMP"
  ) 9>"$ROOT/.kafka/fetch.lock"
}

run_tool() {  # run_tool CLASS ARGS...
  java "${TOOL_JVM[@]}" -cp "$LIBS/*" "$@"
}

# Prints the pid of the broker of $HOME_DIR if it is alive; fails otherwise.
our_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(<"$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid.
  ps -o args= -p "$pid" 2>/dev/null | grep -qF "kafka.Kafka $PROPS" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Bootstrap address of the running broker, read from its properties.
bootstrap() {
  local p
  p="$(sed -n 's#^listeners=PLAINTEXT://\([^,]*\).*#\1#p' "$PROPS" 2>/dev/null || true)"
  echo "${p:-127.0.0.1:$PORT}"
}

# Ready = the PLAINTEXT port accepts connections and a metadata request succeeds.
answering() {
  local addr
  addr="$(bootstrap)"
  port_open "${addr##*:}" || return 1
  timeout 30 java "${TOOL_JVM[@]}" -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$addr" --command-config "$PROBE_PROPS" --list \
    >"$LOGS/probe.log" 2>&1
}

tls_enabled() { [[ -n "$SSL_PORT" || -n "$SASL_SSL_PORT" ]]; }

# A value for a .properties file, where a backslash is an escape.
prop_value() { printf '%s' "${1//\\/\\\\}"; }

# Fails, naming the variable (never a password), unless the TLS settings are usable.
check_tls() {
  tls_enabled || return 0
  [[ -n "${KAFKA_SSL_KEYSTORE:-}" && -r "${KAFKA_SSL_KEYSTORE:-}" ]] ||
    die "a TLS port is set: KAFKA_SSL_KEYSTORE must name a readable keystore (got '${KAFKA_SSL_KEYSTORE:-}')"
  [[ -n "${KAFKA_SSL_KEYSTORE_PASSWORD:-}" ]] || die "a TLS port is set: KAFKA_SSL_KEYSTORE_PASSWORD is required"
  case "$SSL_CLIENT_AUTH" in
    none) ;;
    requested | required)
      [[ -n "${KAFKA_SSL_TRUSTSTORE:-}" && -r "${KAFKA_SSL_TRUSTSTORE:-}" ]] ||
        die "KAFKA_SSL_CLIENT_AUTH=$SSL_CLIENT_AUTH needs KAFKA_SSL_TRUSTSTORE (a readable truststore)"
      ;;
    *) die "KAFKA_SSL_CLIENT_AUTH: expected none, requested or required, got '$SSL_CLIENT_AUTH'" ;;
  esac
}

write_props() {
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  local name sasl_listeners=()
  if [[ -n "$SASL_PORT" ]]; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    advertised+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    sasl_listeners+=(sasl_plaintext)
  fi
  if [[ -n "$SSL_PORT" ]]; then
    listeners+=",SSL://127.0.0.1:$SSL_PORT"
    advertised+=",SSL://127.0.0.1:$SSL_PORT"
    protocols+=",SSL:SSL"
  fi
  if [[ -n "$SASL_SSL_PORT" ]]; then
    listeners+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    advertised+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
    sasl_listeners+=(sasl_ssl)
  fi
  # It holds passwords: readable by the owner only, from before the first byte is written.
  (umask 077 && : >"$PROPS")
  chmod 600 "$PROPS"
  cat >"$PROPS" <<EOF
# Written by scripts/kafka.sh on every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# On restart the controller keeps the previous broker incarnation registered until
# its session expires (default 9 s); a shorter session makes restarts faster.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
EOF
  if ((${#sasl_listeners[@]})); then
    echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" >>"$PROPS"
  fi
  local acl_entry=""
  if [[ -n "$ACL_USER" ]]; then
    acl_entry=" user_$ACL_USER=\"$ACL_PASSWORD\""
    cat >>"$PROPS" <<EOF
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:$SASL_USER
allow.everyone.if.no.acl.found=false
EOF
  fi
  for name in "${sasl_listeners[@]}"; do
    cat >>"$PROPS" <<EOF
listener.name.$name.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$SASL_USER" password="$SASL_PASSWORD" user_$SASL_USER="$SASL_PASSWORD"$acl_entry;
listener.name.$name.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$name.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  done
  if tls_enabled; then
    cat >>"$PROPS" <<EOF
ssl.keystore.location=$(prop_value "$KAFKA_SSL_KEYSTORE")
ssl.keystore.type=${KAFKA_SSL_KEYSTORE_TYPE:-PKCS12}
ssl.keystore.password=$(prop_value "$KAFKA_SSL_KEYSTORE_PASSWORD")
ssl.key.password=$(prop_value "${KAFKA_SSL_KEY_PASSWORD:-$KAFKA_SSL_KEYSTORE_PASSWORD}")
listener.name.ssl.ssl.client.auth=$SSL_CLIENT_AUTH
EOF
    if [[ -n "${KAFKA_SSL_TRUSTSTORE:-}" ]]; then
      cat >>"$PROPS" <<EOF
ssl.truststore.location=$(prop_value "$KAFKA_SSL_TRUSTSTORE")
ssl.truststore.type=${KAFKA_SSL_TRUSTSTORE_TYPE:-PKCS12}
EOF
      if [[ -n "${KAFKA_SSL_TRUSTSTORE_PASSWORD:-}" ]]; then
        echo "ssl.truststore.password=$(prop_value "$KAFKA_SSL_TRUSTSTORE_PASSWORD")" >>"$PROPS"
      fi
    fi
  fi
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=15000\n' >"$PROBE_PROPS"
}

format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cid
  # A Kafka Uuid: 16 random bytes, base64url without padding.
  cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
  mkdir -p "$DATA"
  # SCRAM credentials can only be seeded at format time without a running broker;
  # they are added always, so a SASL listener can be enabled later on the same data.
  # --cluster-id=ID, not -t ID: a random id may start with "-", which would read as an option.
  if ! run_tool kafka.tools.StorageTool format --cluster-id="$cid" -c "$PROPS" \
      --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" \
      >"$LOGS/format.log" 2>&1; then
    cat "$LOGS/format.log" >&2
    die "formatting $DATA failed"
  fi
}

fail_start() {  # fail_start PID MESSAGE
  say "$2; last lines of $LOGS/server.log from this start:"
  # server.log is appended to across starts: show only what this start wrote.
  tail -c "+$((${LOG_OFFSET:-0} + 1))" "$LOGS/server.log" 2>/dev/null | tail -n 40 >&2 || true
  if [[ -s "$LOGS/kafka.out" ]]; then
    say "last lines of $LOGS/kafka.out:"
    tail -n 20 "$LOGS/kafka.out" >&2
  fi
  kill -KILL "$1" 2>/dev/null || true
  rm -f "$PID_FILE"
  exit 1
}

wait_ready() {  # wait_ready PID
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || fail_start "$pid" "the broker exited during startup"
    answering && return 0
    sleep 1
  done
  fail_start "$pid" "the broker did not answer within ${START_TIMEOUT}s"
}

# host:port of the broker's listener for PROTOCOL, empty if it has none.
listener_address() {
  local listeners
  listeners="$(sed -n 's/^listeners=//p' "$PROPS")"
  tr ',' '\n' <<<"$listeners" | sed -n "s#^$1://##p" | head -n 1
}

ready_message() {
  echo "Kafka $KAFKA_VERSION ready at $(bootstrap) (pid $1, dir $HOME_DIR)"
  local address credentials="$SASL_USER/$SASL_PASSWORD"
  # The built-in development password may be shown; one from the environment never is.
  [[ -z "${KAFKA_SASL_PASSWORD:-}" ]] || credentials="$SASL_USER, password from KAFKA_SASL_PASSWORD"
  address="$(listener_address SASL_PLAINTEXT)"
  [[ -z "$address" ]] || echo "SASL (PLAIN, SCRAM-SHA-256/512; $credentials) at $address"
  address="$(listener_address SSL)"
  [[ -z "$address" ]] || echo "TLS (client certificate: $SSL_CLIENT_AUTH) at $address"
  address="$(listener_address SASL_SSL)"
  [[ -z "$address" ]] || echo "SASL over TLS (PLAIN, SCRAM-SHA-256/512; $credentials) at $address"
}

cmd_up() {
  need_java
  mkdir -p "$HOME_DIR" "$LOGS"
  # Serialise concurrent `up`s on the same dir (e.g. parallel test workers).
  exec 8>"$HOME_DIR/up.lock"
  command -v flock >/dev/null 2>&1 && flock 8
  local pid
  if pid="$(our_pid)"; then
    if answering; then
      echo "Kafka already running at $(bootstrap) (pid $pid)"
      return 0
    fi
    say "broker process $pid is up but not answering yet; waiting"
    wait_ready "$pid"
    ready_message "$pid"
    return 0
  fi
  rm -f "$PID_FILE"
  local p
  for p in "$PORT" "$CPORT" ${SASL_PORT:+"$SASL_PORT"} ${SSL_PORT:+"$SSL_PORT"} \
      ${SASL_SSL_PORT:+"$SASL_SSL_PORT"}; do
    if port_open "$p"; then
      say "port $p is already in use by another process:"
      { ss -ltnp "sport = :$p" 2>/dev/null || true; } | tail -n +2 >&2
      die "free it, or pick other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT /" \
        "KAFKA_SSL_PORT / KAFKA_SASL_SSL_PORT"
    fi
  done
  check_tls

  fetch
  write_props
  format_storage

  local heap=() extra=()
  read -ra heap <<<"$HEAP_OPTS"
  read -ra extra <<<"${KAFKA_OPTS:-}"
  local jvm=("${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$CONF_SRC/log4j2.xml" "-Dkafka.logs.dir=$LOGS"
    "${extra[@]}")
  LOG_OFFSET="$(stat -c %s "$LOGS/server.log" 2>/dev/null || echo 0)"
  # setsid: detach from the caller's process group so the broker outlives this shell.
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  nohup "${launcher[@]}" java "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$PROPS" \
    >"$LOGS/kafka.out" 2>&1 </dev/null 8>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  say "started broker (pid $pid), waiting up to ${START_TIMEOUT}s for it to answer"
  wait_ready "$pid"
  ready_message "$pid"
}

cmd_down() {
  local purge=0 pid i
  case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) die "usage: $0 down [--purge]" ;;
  esac
  if pid="$(our_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "broker $pid still alive after 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
    echo "Kafka stopped (pid $pid)"
  else
    echo "Kafka not running"
  fi
  rm -f "$PID_FILE"
  if ((purge)); then
    rm -rf "$DATA" "$LOGS" "$PROPS" "$PROBE_PROPS" "$HOME_DIR/up.lock"
    echo "Kafka data and logs deleted from $HOME_DIR"
  fi
}

cmd_status() {
  local pid
  if pid="$(our_pid)"; then
    local addr
    addr="$(bootstrap)"
    if port_open "${addr##*:}"; then
      echo "Kafka running at $addr (pid $pid)"
      return 0
    fi
    echo "Kafka process $pid alive but $addr not listening (starting or stopping)"
    return 1
  fi
  echo "Kafka not running"
  return 1
}

cmd_tool() {
  [[ $# -ge 1 ]] || die "usage: $0 tool CLASS|ALIAS [ARGS...]"
  local cls="$1"
  shift
  case "$cls" in
    topics) cls=org.apache.kafka.tools.TopicCommand ;;
    produce) cls=org.apache.kafka.tools.ConsoleProducer ;;
    consume) cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    configs) cls=kafka.admin.ConfigCommand ;;
    groups) cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    acls) cls=org.apache.kafka.tools.AclCommand ;;
    storage) cls=kafka.tools.StorageTool ;;
  esac
  need_java
  fetch
  exec java "${TOOL_JVM[@]}" -cp "$LIBS/*" "$cls" "$@"
}

case "${1:-}" in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  fetch) need_java; fetch; echo "Kafka $KAFKA_VERSION jars in $LIBS" ;;
  tool) shift; cmd_tool "$@" ;;
  *) echo "usage: $0 {up|down [--purge]|status|fetch|tool CLASS [ARGS...]}" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# kafka-broker.sh - one real Apache Kafka 4.x broker for local development and
# integration tests: KRaft, combined broker+controller (node.id=1), bound to
# 127.0.0.1 only. The jars come from Maven Central via scripts/kafka/pom.xml
# (no Docker, no release tarball); needs Java 17+ and Maven.
#
# Usage: scripts/kafka-broker.sh [start|stop|status|clean|run|fetch|config]   (default: start)
#   start   fetch jars if needed, write config, format storage on first use, start the
#           broker in the background and wait until it serves. Idempotent. On success
#           stdout is exactly one line: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>
#           (everything else goes to stderr).
#   stop    SIGTERM (controlled shutdown) and wait; SIGKILL after KAFKA_STOP_TIMEOUT.
#   status  prints "running ..." (exit 0) or "not running" (exit 3).
#   clean   stop, then delete the work dir (data + logs). Jars are kept.
#   run     like start, but exec the broker in the foreground (for supervisors).
#   fetch   (re)resolve the jars with Maven.
#   config  write and print server.properties.
#
# Environment (all optional):
#   KAFKA_PORT=9092  KAFKA_CONTROLLER_PORT=9093
#   KAFKA_WORK=<repo>/.kafka/work     data, logs, config, pid file
#   KAFKA_LIBS=<repo>/.kafka/libs     jar cache
#   KAFKA_VERSION=<x.y.z>             override the pom's kafka.version
#   KAFKA_HEAP_OPTS="-Xms256m -Xmx768m"   KAFKA_JVM_OPTS=<extra JVM flags>
#   KAFKA_JIT=c1                      c1: C1-only JIT (starts faster, half the CPU while
#                                     starting, ~35% less peak throughput); full: C1+C2
#   KAFKA_CDS=1                       1: AppCDS archive of the broker's classes, made by the
#                                     first start and saved by the next clean `stop` (that stop
#                                     takes ~5 s longer, once); 0: off. Default 0 when CI=true
#                                     (a fresh CI machine starts once and would only pay)
#   KAFKA_START_TIMEOUT=90  KAFKA_STOP_TIMEOUT=60   (seconds)
#   KAFKA_EXTRA_PROPS=$'key=value\n...'   appended to server.properties
#   JAVA_HOME, MVN (maven command, default mvn)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
pom=$here/kafka/pom.xml
host=127.0.0.1
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-9093}
work=${KAFKA_WORK:-$repo/.kafka/work}
libs=${KAFKA_LIBS:-$repo/.kafka/libs}
heap=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
# The bin/kafka-run-class.sh defaults (KAFKA_JVM_PERFORMANCE_OPTS).
jvm_perf="-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true"
jit=${KAFKA_JIT:-c1}
if [ "${CI:-}" = true ]; then cds=${KAFKA_CDS:-0}; else cds=${KAFKA_CDS:-1}; fi
start_timeout=${KAFKA_START_TIMEOUT:-90}
stop_timeout=${KAFKA_STOP_TIMEOUT:-60}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
mvn=${MVN:-mvn}

data=$work/data
logdir=$work/logs
props=$work/server.properties
log4j=$work/log4j2.properties
pidfile=$work/kafka.pid
cds_dir=$libs/cds
ready_line="Kafka Server started"

say() { echo "kafka-broker: $*" >&2; }
die() { say "error: $*"; exit 1; }

locked=
lock() {
  # Serialise concurrent invocations (e.g. parallel test workers calling start).
  [ -z "$locked" ] || return 0
  locked=1
  command -v flock >/dev/null 2>&1 || return 0
  mkdir -p "$(dirname "$work")"
  exec 9>"$work.lock"
  flock 9
}

kafka_version() {
  if [ -n "${KAFKA_VERSION:-}" ]; then
    echo "$KAFKA_VERSION"
  else
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1
  fi
}

java_build=
need_java() {
  command -v "$java" >/dev/null 2>&1 || die "java not found (Kafka 4.x brokers need Java 17+)"
  local v
  java_build=$("$java" -version 2>&1)
  v=$(echo "$java_build" | sed -En 's/.* version "([0-9]+).*/\1/p' | head -n1)
  [ "${v:-0}" -ge 17 ] || die "Java ${v:-?} found; Kafka 4.x brokers need Java 17+"
}

# The jar cache is valid for one (pom, version) pair.
stamp() { echo "$(kafka_version) $(cksum <"$pom")"; }

have_libs() {
  [ -f "$libs/.stamp" ] && [ "$(cat "$libs/.stamp")" = "$(stamp)" ] \
    && [ -f "$libs/kafka_2.13-$(kafka_version).jar" ]
}

fetch() {
  command -v "$mvn" >/dev/null 2>&1 || die "mvn not found (needed once to fetch the broker jars)"
  local ver tmp=$libs.tmp j
  ver=$(kafka_version)
  say "resolving Kafka $ver jars into $libs (Maven)"
  rm -rf "$tmp"
  # copy-dependencies never deletes jars: resolve into a fresh dir, then swap it in,
  # so two Kafka versions never share one classpath.
  "$mvn" -q -B -f "$pom" "-Dkafka.version=$ver" dependency:copy-dependencies \
    -DincludeScope=runtime "-DoutputDirectory=$tmp" 2>&1 | sed $'s/\x1b\\[[0-9;]*m//g' >&2 \
    || die "mvn could not resolve the broker classpath for Kafka $ver"
  for j in "kafka_2.13-$ver" "kafka-clients-$ver" "kafka-server-$ver" "kafka-raft-$ver" \
           scala-library log4j-core log4j-slf4j-impl; do
    compgen -G "$tmp/$j*.jar" >/dev/null || die "resolved classpath lacks $j (see $tmp)"
  done
  stamp >"$tmp/.stamp"
  rm -rf "$libs"
  mv "$tmp" "$libs"
  say "$(find "$libs" -name '*.jar' | wc -l) jars in $libs"
}

write_config() {
  mkdir -p "$data" "$logdir"
  cat >"$props" <<EOF
# Generated by scripts/kafka-broker.sh: one node, combined broker+controller, loopback only.
process.roles=broker,controller
node.id=1
# Static quorum: the voter set comes from this file on every start, so changing
# KAFKA_CONTROLLER_PORT later needs no re-format.
controller.quorum.voters=1@$host:$cport
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
# Everything internal must fit on one broker (defaults are RF 3 / min ISR 2, which
# leave consumer groups and transactions stuck on COORDINATOR_NOT_AVAILABLE).
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
# Test speed: no 3 s wait before the first rebalance of a new group; quick unfencing.
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
# Sized for a small shared machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
auto.create.topics.enable=true
delete.topic.enable=true
EOF
  if [ -n "${KAFKA_EXTRA_PROPS:-}" ]; then
    printf '%s\n' "$KAFKA_EXTRA_PROPS" >>"$props"
  fi
  cat >"$log4j" <<'EOF'
# INFO and up to logs/server.log, WARN and up to the console (logs/kafka.out).
status = warn
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = STDERR
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
EOF
}

new_cluster_id() {
  # Same shape as org.apache.kafka.common.Uuid.randomUuid(): url-safe base64 of
  # 16 random bytes, no padding, never starting with '-'.
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    case $id in -*) ;; *) echo "$id"; return ;; esac
  done
}

# The CDS archive is only valid for this exact JVM build and classpath; the classpath
# lives in $libs, which fetch replaces as a whole, so the key is the JVM build.
cds_archive() { echo "$cds_dir/kafka-$(echo "$java_build" | cksum | cut -d' ' -f1).jsa"; }

# Sets JAVA_CMD. $1: use|dump|off for the CDS archive.
java_cmd() {
  local extra=()
  [ "$jit" = full ] || extra+=(-XX:TieredStopAtLevel=1)
  case $1 in
    use) extra+=("-XX:SharedArchiveFile=$(cds_archive)" "-Xlog:cds*=off") ;;
    dump) mkdir -p "$cds_dir"
          extra+=("-XX:ArchiveClassesAtExit=$(cds_archive).new" "-Xlog:cds*=off") ;;
  esac
  # shellcheck disable=SC2206  # heap/JVM options are whitespace-separated flag lists
  JAVA_CMD=("$java" $heap $jvm_perf "${extra[@]}" ${KAFKA_JVM_OPTS:-}
            "-XX:ErrorFile=$logdir/hs_err_pid%p.log" "-Dkafka.logs.dir=$logdir" "-Dlog4j2.configurationFile=$log4j" -cp "$libs/*")
}

cds_mode() {
  if [ "$cds" = 0 ]; then echo off
  elif [ -s "$(cds_archive)" ]; then echo use
  else echo "${1:-dump}"
  fi
}

format_storage() {
  [ -f "$data/meta.properties" ] && return 0
  local id
  id=$(new_cluster_id)
  say "formatting $data (cluster id $id)"
  "$java" -Xmx256m -XX:TieredStopAtLevel=1 "-XX:ErrorFile=$logdir/hs_err_pid%p.log" \
    "-Dkafka.logs.dir=$logdir" \
    "-Dlog4j2.configurationFile=$log4j" -cp "$libs/*" \
    kafka.tools.StorageTool format -t "$id" -c "$props" --ignore-formatted >&2 \
    || die "kafka-storage format failed"
}

prepare() {
  need_java
  have_libs || fetch
  write_config
  local f
  for f in server.log kafka.out; do
    if [ -f "$logdir/$f" ]; then mv -f "$logdir/$f" "$logdir/$f.prev"; fi
  done
  format_storage
}

broker_pid() {
  # Prints the broker's pid if the pid file names a live kafka.Kafka process.
  local pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  fi
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

show_logs() {
  local f
  for f in "$logdir/kafka.out" "$logdir/server.log"; do
    [ -s "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    { grep -v $'^\t' "$f" || true; } | tail -n 30 >&2  # skip the config dump
  done
}

# Waits until the broker with this pid has logged readiness and its port accepts
# connections. Returns 1 if the process dies, 2 on timeout.
wait_ready() {
  local pid=$1 deadline=$((SECONDS + start_timeout))
  while :; do
    if grep -qs "$ready_line" "$logdir/server.log" && port_open "$port"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 2
    sleep 0.1
  done
}

# "Kafka Server started" comes ~0.3 s before the group and transaction coordinators
# have loaded their (existing) partitions; clients would retry on "coordinator load in
# progress" until then. Wait for them briefly, but never fail on it.
wait_coordinators() {
  local deadline=$((SECONDS + 10)) log=$logdir/server.log
  while [ "$SECONDS" -lt "$deadline" ]; do
    { [ ! -d "$data/__consumer_offsets-0" ] \
      || grep -qs 'Finished loading of metadata from __consumer_offsets' "$log"; } \
      && { [ ! -d "$data/__transaction_state-0" ] \
           || grep -qs 'Completed loading transaction metadata from __transaction_state' "$log"; } \
      && return 0
    sleep 0.1
  done
}

# SIGTERM, wait; SIGKILL after stop_timeout. Returns 1 if SIGKILL was needed.
kill_and_wait() {
  local pid=$1 waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((stop_timeout * 10)) ]; then
      say "pid $pid still alive ${stop_timeout}s after SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

cmd_start() {
  lock
  local pid t0 rc mode attempt
  if pid=$(broker_pid); then
    say "already running (pid $pid)"
    wait_ready "$pid" || die "broker pid $pid is running but not ready (logs in $logdir)"
    echo "KAFKA_BOOTSTRAP_SERVERS=$host:$port"
    return 0
  fi
  rm -f "$pidfile"
  if port_open "$port"; then die "$host:$port is already in use by another process"; fi
  if port_open "$cport"; then die "$host:$cport is already in use by another process"; fi
  t0=$(date +%s.%N)
  prepare
  mode=$(cds_mode dump)
  for attempt in 1 2; do
    java_cmd "$mode"
    nohup "${JAVA_CMD[@]}" kafka.Kafka "$props" >"$logdir/kafka.out" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$pidfile"
    rc=0
    wait_ready "$pid" || rc=$?
    # A damaged CDS archive makes the JVM die before it logs anything: drop the
    # archive and start once more without it.
    if [ "$rc" -eq 1 ] && [ "$mode" = use ] && [ "$attempt" -eq 1 ] \
       && [ ! -s "$logdir/server.log" ]; then
      say "broker died at startup with the CDS archive; deleting it and retrying without"
      rm -f "$(cds_archive)"
      mode=off
      continue
    fi
    break
  done
  if [ "$rc" -ne 0 ]; then
    show_logs
    if [ "$rc" -eq 1 ]; then
      rm -f "$pidfile"
      die "broker exited during startup (logs in $logdir)"
    fi
    kill_and_wait "$pid" || true
    rm -f "$pidfile"
    die "broker not ready after ${start_timeout}s; stopped it (logs in $logdir)"
  fi
  wait_coordinators
  say "Kafka $(kafka_version) ready in $(echo "$(date +%s.%N) $t0" | awk '{printf "%.1f", $1 - $2}')s" \
      "(pid $pid, jit $jit, cds $mode, logs in $logdir)"
  echo "KAFKA_BOOTSTRAP_SERVERS=$host:$port"
}

cmd_run() {
  lock
  local pid
  if pid=$(broker_pid); then die "already running in the background (pid $pid)"; fi
  prepare
  java_cmd "$(cds_mode off)"
  echo $$ >"$pidfile"
  say "running Kafka $(kafka_version) in the foreground; KAFKA_BOOTSTRAP_SERVERS=$host:$port"
  exec "${JAVA_CMD[@]}" kafka.Kafka "$props" 9>&-
}

cmd_stop() {
  lock
  local pid
  if ! pid=$(broker_pid); then
    rm -f "$pidfile"
    say "not running"
    return 0
  fi
  say "stopping pid $pid (SIGTERM, controlled shutdown)"
  local archive
  java_build=$("$java" -version 2>&1 || true)
  archive=$(cds_archive)
  if kill_and_wait "$pid"; then
    # A start that found no CDS archive asked the JVM to write one at exit; keep it
    # only after a clean exit (a truncated archive crashes the JVM).
    if [ -s "$archive.new" ]; then mv -f "$archive.new" "$archive"; say "saved CDS archive $archive"; fi
  else
    rm -f "$archive.new"
  fi
  rm -f "$pidfile"
  say "stopped"
}

cmd_status() {
  local pid
  if pid=$(broker_pid); then
    if port_open "$port"; then
      echo "running pid $pid, KAFKA_BOOTSTRAP_SERVERS=$host:$port"
    else
      echo "running pid $pid, $host:$port not accepting connections (yet)"
    fi
  else
    echo "not running"
    return 3
  fi
}

cmd_clean() {
  cmd_stop
  rm -rf "$work"
  say "deleted $work"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  clean) cmd_clean ;;
  run) cmd_run ;;
  fetch) need_java; lock; fetch ;;
  config) write_config; cat "$props" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 [start|stop|status|clean|run|fetch|config]" ;;
esac

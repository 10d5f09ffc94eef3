#!/usr/bin/env bash
# Single-host Slurm, tuned for job throughput, as a peer for Loom's scheduler bench.
#
#   slurm.sh up              start slurmctld + slurmd (+ munged if SLURM_AUTH=munge) on 127.0.0.1;
#                            stdout: `export SLURM_STATE=...` then `export SLURM_CONF=...` (last line)
#   slurm.sh run N [MODE]    N trivial 1-CPU jobs, submit -> all done; one JSON line per mode.
#                            MODE: separate (N sbatch calls), array (one sbatch --array=1-N), both (default)
#   slurm.sh down            stop what `up` started (recorded pids), cancel leftover jobs
#   slurm.sh status          show daemons, node and queue
#
# Environment: see README.md. Progress goes to stderr; stdout carries only the exports / JSON.
set -euo pipefail

readonly NODE=loombench
readonly PARTITION=bench
readonly MARKER=.loom-slurm-state

log() { printf 'slurm.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------- state dir -------------------------------------------------------------------------

resolve_state() {
  # For run/down/status: SLURM_STATE, else the dir holding SLURM_CONF.
  if [[ -n ${SLURM_STATE:-} ]]; then
    S=$SLURM_STATE
  elif [[ -n ${SLURM_CONF:-} ]]; then
    S=$(dirname "$SLURM_CONF")
  else
    die "set SLURM_STATE (or SLURM_CONF) to the dir printed by 'slurm.sh up'"
  fi
  [[ -f $S/$MARKER ]] || die "$S is not a state dir made by slurm.sh up"
  S=$(cd "$S" && pwd)
  CONF=$S/slurm.conf
  export SLURM_CONF=$CONF
}

pid_of() { # name -> pid if recorded and alive as the expected binary with our config
  local f=$S/run/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  # The command line must name both the binary and this state dir (guards against pid reuse).
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$S/" || return 1
  printf '%s\n' "$pid"
}

# ---------- install ---------------------------------------------------------------------------

ensure_installed() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
    return
  fi
  [[ $(id -u) -eq 0 ]] || die "slurmctld is missing and installing it needs root"
  log "installing slurm-wlm with apt-get (one apt-get update first)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends slurm-wlm >&2
}

# ---------- ports -----------------------------------------------------------------------------

used_ports() { # every local TCP port in any state, decimal, one per line
  local f
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $f ]] || continue
    awk 'NR > 1 { split($2, a, ":"); print a[2] }' "$f"
  done | sort -u | while read -r hex; do echo $((16#$hex)); done
}

pick_port_base() { # count -> first port of `count` consecutive free ports below the ephemeral range
  local count=$1 low hi base p used ok try
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  hi=$((low - count - 1))
  ((hi > 20000)) || hi=30000
  used=" $(used_ports | tr '\n' ' ') "
  for ((try = 0; try < 200; try++)); do
    base=$((20000 + RANDOM % (hi - 20000)))
    ok=1
    for ((p = base; p < base + count; p++)); do
      [[ $used == *" $p "* ]] && ok=0 && break
    done
    ((ok)) && echo "$base" && return
  done
  die "no $count free consecutive ports found"
}

# ---------- config ----------------------------------------------------------------------------

write_conf() {
  local cpus base ctld_lo ctld_hi slurmd_port auth cred authinfo=""
  cpus=${SLURM_CPUS:-$(nproc)}
  base=$(pick_port_base 5)
  ctld_lo=$base
  ctld_hi=$((base + 3)) # 4 listening ports for slurmctld, as the high-throughput guide suggests
  slurmd_port=$((base + 4))
  case ${SLURM_AUTH:-none} in
  none) auth=auth/none cred=cred/none ;;
  munge)
    auth=auth/munge cred=cred/munge
    authinfo="AuthInfo=socket=$S/munge/munge.sock"
    ;;
  *) die "SLURM_AUTH must be none or munge" ;;
  esac
  local sched_params=${SLURM_SCHED_PARAMS-batch_sched_delay=0,sched_min_interval=0,max_rpc_cnt=150} epilog=${SLURM_EPILOG-/bin/true}

  cat >"$CONF" <<EOF
# Written by bench/slurm/slurm.sh: a one-node Slurm on 127.0.0.1, tuned for job throughput
# (https://slurm.schedmd.com/high_throughput.html). See bench/slurm/README.md.
ClusterName=loombench
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_lo-$ctld_hi
SlurmdPort=$slurmd_port
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=$auth
CredType=$cred
$authinfo

StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.daemon.pid
SlurmdPidFile=$S/run/slurmd.daemon.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=error
SlurmdDebug=error
LogTimeFormat=iso8601_ms

# Scheduling: FIFO, cheap priorities, no backfill; run the scheduler as soon as a CPU frees up.
SchedulerType=sched/builtin
PriorityType=priority/basic
${sched_params:+SchedulerParameters=$sched_params}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU

# Keep the per-job path short: no cgroups, no accounting, no completion log, no prolog.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
CompleteWait=0
# A no-op Epilog is deliberate, see README: without one, slurmd answers the job's terminate RPC
# with "already complete" and slurmctld only queues a scheduler pass for its 1 s background loop,
# so a freed CPU stays idle for up to 1 s. With an Epilog, slurmd sends MESSAGE_EPILOG_COMPLETE,
# whose handler runs the scheduler at once.
${epilog:+Epilog=$epilog}

# Job records: many allowed, purged a few seconds after they finish.
MaxJobCount=200000
MaxArraySize=100001
MinJobAge=2
MessageTimeout=30
ReturnToService=2
InactiveLimit=0
KillWait=5
Waittime=0

SlurmdParameters=config_overrides
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  log "wrote $CONF (slurmctld ports $ctld_lo-$ctld_hi, slurmd port $slurmd_port, $cpus CPUs, $auth)"
}

# ---------- daemons ---------------------------------------------------------------------------

start_daemon() { # name cmd... : foreground daemon in its own session, pid recorded
  local name=$1
  shift
  (
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    ulimit -s unlimited 2>/dev/null || true
    exec setsid "$@" </dev/null >>"$S/log/$name.out" 2>&1
  ) &
  echo $! >"$S/run/$name.pid"
}

wait_for() { # seconds description cmd... ; gives up early if the daemon named `description` died
  local secs=$1 what=$2 i pid=""
  shift 2
  [[ -f $S/run/$what.pid ]] && pid=$(<"$S/run/$what.pid")
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n $pid && ! -d /proc/$pid ]]; then
      log "$what exited; log tails:"
      tail -n 20 "$S"/log/*.log "$S"/log/*.out >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.1
  done
  log "timed out after ${secs}s waiting for $what; log tails:"
  tail -n 20 "$S"/log/*.log "$S"/log/*.out >&2 2>/dev/null || true
  return 1
}

node_idle() { [[ $(sinfo -h -n "$NODE" -o %T 2>/dev/null) == idle ]]; }
ctld_up() { scontrol ping 2>/dev/null | grep -q UP; }

start_munge() {
  local m=$S/munge
  mkdir -p "$m"
  chmod 0700 "$m"
  if [[ ! -f $m/munge.key ]]; then
    head -c 1024 /dev/urandom >"$m/munge.key"
    chmod 0400 "$m/munge.key"
  fi
  command -v munged >/dev/null || die "munged is missing (apt-get install munge)"
  # --num-threads 10: the high-throughput guide's advice. --force: state dir lives under /tmp.
  start_daemon munged munged --foreground --force --num-threads=10 \
    --key-file="$m/munge.key" --socket="$m/munge.sock" --pid-file="$m/munged.pid" \
    --log-file="$S/log/munged.log" --seed-file="$m/munge.seed"
  wait_for 10 munged test -S "$m/munge.sock"
}

up_failed() { # stop whatever this `up` started, keep the logs, fail
  stop_all quiet
  die "$1 (logs in $S/log)"
}

cmd_up() {
  ensure_installed
  local created=0
  if [[ -z ${SLURM_STATE:-} ]]; then
    S=$(mktemp -d /tmp/loom-slurm.XXXXXX)
    created=1
  else
    S=$SLURM_STATE
    mkdir -p "$S"
  fi
  S=$(cd "$S" && pwd)
  [[ $created -eq 1 ]] && : >"$S/$MARKER.mktemp"
  : >"$S/$MARKER"
  CONF=$S/slurm.conf
  export SLURM_CONF=$CONF
  mkdir -p "$S/ctld" "$S/spool" "$S/run" "$S/log" "$S/work"

  if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && ctld_up; then
    log "already running in $S"
  else
    stop_all quiet
    write_conf
    if [[ ${SLURM_AUTH:-none} == munge ]]; then
      start_munge || up_failed "munged did not start"
    fi
    # -c: start with empty job state; -i: ignore unreadable state.
    start_daemon slurmctld slurmctld -D -c -i -f "$CONF"
    wait_for 30 slurmctld ctld_up || up_failed "slurmctld did not start"
    start_daemon slurmd slurmd -D -N "$NODE" -f "$CONF"
    wait_for 60 slurmd node_idle || up_failed "node did not become idle"
    log "up: $(sinfo -h -o '%P %D %T %C') ($(slurm_version))"
  fi
  printf 'export SLURM_STATE=%q\n' "$S"
  printf 'export SLURM_CONF=%q\n' "$CONF"
}

our_stepds() { # slurmstepd processes started by this state dir's slurmd (they inherit SLURM_CONF)
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $(cat "$d/comm" 2>/dev/null) == slurmstepd ]] || continue
    tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" && echo "$pid"
  done
  return 0
}

kill_pids() { # pids... : TERM, wait up to 10 s, then KILL
  local pid i alive
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive=0
    for pid in "$@"; do [[ -d /proc/$pid ]] && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  log "sending KILL to $*"
  kill -KILL "$@" 2>/dev/null || true
}

stop_all() {
  local quiet=${1:-} pid name
  # Cancel whatever is left, so no slurmstepd outlives slurmd.
  if pid_of slurmctld >/dev/null && ctld_up; then
    timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
  fi
  for name in slurmd slurmctld munged; do
    if pid=$(pid_of "$name"); then
      [[ -n $quiet ]] || log "stopping $name ($pid)"
      kill_pids "$pid"
    fi
    rm -f "$S/run/$name.pid"
  done
  # shellcheck disable=SC2046
  kill_pids $(our_stepds)
}

cmd_down() {
  local dir=${SLURM_STATE:-${SLURM_CONF:+$(dirname "${SLURM_CONF:-}")}}
  if [[ -n $dir && ! -e $dir ]]; then
    log "down: $dir does not exist; nothing to stop"
    return 0
  fi
  resolve_state
  stop_all
  if [[ -f $S/$MARKER.mktemp && ${SLURM_KEEP_STATE:-0} != 1 ]]; then
    rm -rf -- "$S"
    log "down; removed $S"
  else
    log "down; state kept in $S"
  fi
}

cmd_status() {
  resolve_state
  local name pid
  for name in munged slurmctld slurmd; do
    if pid=$(pid_of "$name"); then echo "$name: pid $pid"; else echo "$name: not running"; fi
  done
  sinfo 2>&1 || true
  squeue 2>&1 | head -20 || true
}

# ---------- run -------------------------------------------------------------------------------

slurm_version() { scontrol --version | awk '{print $NF}'; }

active_jobs() { # jobs not yet finished (pending array tasks count as one line); fails if squeue fails
  local out
  out=$(squeue -h -o %i) || return 1
  if [[ -z $out ]]; then echo 0; else wc -l <<<"$out"; fi
}

wait_all_done() {
  local poll=${SLURM_POLL_S:-0.1} n deadline=$((SECONDS + ${SLURM_RUN_TIMEOUT_S:-1800}))
  while :; do
    if n=$(active_jobs); then
      [[ ${SLURM_TRACE:-0} != 1 ]] || log "t=$EPOCHREALTIME active(lines)=$n"
      ((n == 0)) && return 0
    fi
    ((SECONDS < deadline)) || die "jobs still active after ${SLURM_RUN_TIMEOUT_S:-1800}s"
    sleep "$poll"
  done
}

submit_separate() { # n name : n sbatch calls, SLURM_SUBMIT_CONCURRENCY of them at a time
  local n=$1 name=$2 par=${SLURM_SUBMIT_CONCURRENCY:-1} w i k rc=0
  local -a args=(--parsable --quiet -J "$name" -p "$PARTITION" -n1 -c1 -D "$S/work"
    -o /dev/null -e /dev/null --wrap /bin/true) pids=()
  ((par >= 1)) || par=1
  for ((w = 0; w < par; w++)); do
    k=$((n / par + (w < n % par ? 1 : 0)))
    ((k > 0)) || continue
    (for ((i = 0; i < k; i++)); do sbatch "${args[@]}" >/dev/null; done) &
    pids+=($!)
  done
  for w in "${pids[@]}"; do wait "$w" || rc=1; done
  ((rc == 0)) || die "an sbatch failed"
}

submit_array() { # n name
  sbatch --parsable --quiet -J "$2" -p "$PARTITION" --array="1-$1" -n1 -c1 -D "$S/work" \
    -o /dev/null -e /dev/null --wrap /bin/true >/dev/null
}

run_mode() { # n mode
  local n=$1 mode=$2 name t0 t1 t2 states completed failed load0
  name="lb-$mode-$$-$RANDOM"
  wait_all_done # start from an empty queue
  load0=$(cut -d' ' -f1 /proc/loadavg)
  log "run: $n jobs, mode $mode (load average $load0)"
  t0=$EPOCHREALTIME
  case $mode in
  separate) submit_separate "$n" "$name" ;;
  array) submit_array "$n" "$name" ;;
  *) die "mode must be separate, array or both" ;;
  esac
  t1=$EPOCHREALTIME
  wait_all_done
  t2=$EPOCHREALTIME
  # Not timed: how the jobs ended (records stay in slurmctld for MinJobAge plus the purge interval).
  states=$(squeue -h -r -t all -n "$name" -o %T | sort | uniq -c | awk '{printf "%s%s=%s", sep, $2, $1; sep=","}')
  completed=$(squeue -h -r -t all -n "$name" -o %T | grep -c '^COMPLETED$' || true)
  failed=$(squeue -h -r -t all -n "$name" -o %T | grep -cvE '^(COMPLETED)$' || true)
  [[ -n $states ]] || states="none-visible"
  ((failed == 0)) || log "warning: $failed jobs did not complete: $states"
  awk -v n="$n" -v mode="$mode" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v v="$(slurm_version)" \
    -v c="$completed" -v f="$failed" -v cpus="$(sinfo -h -n "$NODE" -o %c)" \
    -v auth="$(sed -n 's|^AuthType=auth/||p' "$CONF")" -v load="$load0" -v par="${SLURM_SUBMIT_CONCURRENCY:-1}" -v warm="${SLURM_WARMUP:-4}" -v st="$states" 'BEGIN {
      sub_s = t1 - t0; tot = t2 - t0
      printf "{\"jobs\":%d,\"mode\":\"%s\",\"submitSeconds\":%.3f,\"totalSeconds\":%.3f,\"jobsPerSecond\":%.1f,", n, mode, sub_s, tot, n / tot
      printf "\"slurmVersion\":\"%s\",\"nodeCpus\":%d,\"auth\":\"%s\",\"submitConcurrency\":%d,\"warmupJobs\":%d,", v, cpus, auth, (mode == "array" ? 1 : par), warm
      printf "\"completedSeen\":%d,\"notCompletedSeen\":%d,\"states\":\"%s\",\"loadAvg1mAtStart\":%s}\n", c, f, st, load
    }'
}

cmd_run() {
  local n=${1:-} mode=${2:-both}
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "usage: slurm.sh run N [separate|array|both]"
  resolve_state
  if ! pid_of slurmctld >/dev/null || ! pid_of slurmd >/dev/null; then
    die "not up (run 'slurm.sh up' first)"
  fi
  node_idle || wait_for 30 "node $NODE idle" node_idle || die "node is not idle"
  local warm=${SLURM_WARMUP:-4}
  if ((warm > 0)); then # untimed: the first jobs after `up` pay one-time costs (page cache, caches)
    log "warm-up: $warm jobs (not timed)"
    submit_array "$warm" lb-warmup
    wait_all_done
  fi
  case $mode in
  both)
    run_mode "$n" separate
    run_mode "$n" array
    ;;
  separate | array) run_mode "$n" "$mode" ;;
  *) die "mode must be separate, array or both" ;;
  esac
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
run)
  shift
  cmd_run "$@"
  ;;
status) cmd_status ;;
*)
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac

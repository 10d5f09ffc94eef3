# Waits that say what they wait for; sourced by build.sh, up.sh and down.sh (each defines log).
# shellcheck shell=bash

# How often a wait or a long build says it is still going.
: "${LOOM_K8S_PROGRESS_S:=10}"

# lock_fd FD LOCKFILE WHAT: takes the flock open on FD. While another process holds it, says who
# ("waiting for another WHAT (pid …, started …)") at once and every LOOM_K8S_PROGRESS_S seconds,
# instead of blocking without a word (a cold Kubernetes build holds the build lock for 20+ min).
lock_fd() {
  local fd=$1 file=$2 what=$3 start=$SECONDS holder pid since cmd
  if ! flock -n "$fd"; then
    while :; do
      holder="$(cat "$file.holder" 2>/dev/null || true)"
      read -r pid since <<<"$holder" || true
      if [[ -n "${pid:-}" && -e /proc/$pid ]]; then
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120 || true)"
        log "waiting for another $what (pid $pid, started $(date -d "@$since" '+%H:%M:%S'), $(($(date +%s) - since))s ago: ${cmd% }); waited $((SECONDS - start))s so far; lock: $file"
      else
        log "waiting for another $what (holder unknown); waited $((SECONDS - start))s so far; lock: $file"
      fi
      flock -w "$LOOM_K8S_PROGRESS_S" "$fd" && break
    done
    log "got the lock after $((SECONDS - start))s"
  fi
  echo "$$ $(date +%s)" >"$file.holder"
}

# ticking WHAT LOGFILE COMMAND...: runs COMMAND, saying every LOOM_K8S_PROGRESS_S seconds that
# WHAT is still going, for how long, and the last line of LOGFILE.
ticking() {
  local what=$1 file=$2 start=$SECONDS ticker rc=0
  shift 2
  (
    while sleep "$LOOM_K8S_PROGRESS_S"; do
      log "still $what: $((SECONDS - start))s so far; last of $file: $(tail -n 1 "$file" 2>/dev/null | cut -c1-100)"
    done
  ) &
  ticker=$!
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$rc"
}

#!/bin/sh
# loom-sshd: OpenSSH's sshd inside a Loom workload (issue 19), for `loom ssh` and desktop VS Code
# Remote-SSH. Runs as the workload's own user (no root), listens on 127.0.0.1:$LOOM_SSH_PORT
# (default 2222) inside the workload's own network, where only Loom's tunnel reaches it
# (`loom ssh --proxy KIND/NAME` as ProxyCommand), with a host key of the workload's own (kept in
# its HOME: it survives restarts of the workload) and only the keys Loom gives it:
#   LOOM_SSH_AUTHORIZED_KEYS_FILE   a file of public keys (authorized_keys format): the keys the
#     project's editors and admins registered with `loom ssh-key add`, written by Loom into the
#     workload's private HOME when it starts. Keys are never passed in the environment.
# A workload starts it in the background: `sh $LOOM_SSHD & exec python train.py`, or the
# Workspace controller runs it beside the IDE.
# Needs Debian's openssh-server (and libnss-wrapper where the workload's uid has no passwd entry,
# as a sandboxed project's uid has not).
set -e
dir="${LOOM_SSHD_DIR:-${HOME:-/tmp}/.loom-sshd}"
mkdir -p "$dir"
chmod 700 "$dir"
# sshd and ssh-keygen want a passwd entry for the user they run as; nss_wrapper lends one.
if ! getent passwd "$(id -u)" >/dev/null; then
  printf 'loom:x:%s:%s:loom workload:%s:/bin/sh\n' "$(id -u)" "$(id -g)" "${HOME:-$dir}" > "$dir/passwd"
  printf 'loom:x:%s:\n' "$(id -g)" > "$dir/group"
  export LD_PRELOAD="${LOOM_NSS_WRAPPER:-/usr/lib/x86_64-linux-gnu/libnss_wrapper.so}"
  export NSS_WRAPPER_PASSWD="$dir/passwd" NSS_WRAPPER_GROUP="$dir/group"
fi
[ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$dir/host_ed25519"
keys="${LOOM_SSH_AUTHORIZED_KEYS_FILE:-}"
if [ -z "$keys" ] || [ ! -r "$keys" ]; then
  echo "loom-sshd: no authorized keys file (LOOM_SSH_AUTHORIZED_KEYS_FILE): Loom writes one for workloads it runs; register your key with: loom ssh-key add" >&2
  exit 1
fi
[ -s "$keys" ] || echo "loom-sshd: nobody in this project has registered an SSH key yet (loom ssh-key add); no one can log in" >&2
cat > "$dir/sshd_config" <<CFG
Port ${LOOM_SSH_PORT:-2222}
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
AuthorizedKeysFile $keys
PidFile $dir/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
CFG
exec /usr/sbin/sshd -D -e -f "$dir/sshd_config"

#!/usr/bin/env bash
# One-node SLURM cluster on localhost (Debian 12, run as root) for testing sweeps,
# requeue and multi-process launches for real. See /work/shared/docs/slurm-local.md.
#   local_cluster.sh start|stop|status DIR
# All daemon state, logs and pid files live under DIR, so stop can kill exactly
# what start launched (by pid file, never by process name).
set -euo pipefail

die() { echo "local_cluster: $*" >&2; exit 1; }
[[ $# -eq 2 ]] || die "usage: $0 start|stop|status DIR"
CMD=$1; DIR=$2
[[ $EUID -eq 0 ]] || die "must run as root (SlurmUser=root, munge setup)"
DIR=$(realpath -m "$2")   # slurm.conf needs absolute paths
H=$(hostname -s)
CONF=/etc/slurm/slurm.conf
MUNGE_PID=/run/munge/munged.pid

# A pid file is only trusted if the pid is still that daemon: pids get reused,
# and we must never signal an unrelated process.
live_pid() { # pidfile expected-comm -> prints pid if alive and matching
  local p; p=$(cat "$1" 2>/dev/null) || return 1
  [[ $p =~ ^[0-9]+$ ]] && [[ $(cat /proc/"$p"/comm 2>/dev/null) == "$2" ]] && echo "$p"
}

node_state() { timeout 5 sinfo -h -n "$H" -o %t 2>/dev/null | head -n1 || true; }
# '*' = not responding; anything else that is not down/drain/fail can take jobs.
node_up() { local s; s=$(node_state); [[ -n $s && $s != *'*'* && ! $s =~ ^(down|drain|drng|fail|unk) ]]; }

# After a restart slurmctld restores the node as idle from its state files before
# slurmd has registered, so also require a SlurmdStartTime from our live slurmd.
slurmd_registered() {
  local p t; p=$(live_pid "$DIR/slurmd.pid" slurmd) || return 1
  t=$(timeout 5 scontrol show node "$H" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
  [[ -n $t && $t != None ]] && (( $(date -d "$t" +%s) >= $(date -d "$(ps -o lstart= -p "$p")" +%s) ))
}

stop_pid() { # pidfile comm: TERM, wait up to 10 s, then KILL
  local p; p=$(live_pid "$1" "$2") || return 0
  kill "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
  echo "local_cluster: $2 ($p) ignored SIGTERM, sending SIGKILL" >&2
  kill -9 "$p" 2>/dev/null || true
}

write_conf() {
  # RealMemory above the machine's real memory makes slurmd register the node
  # as drained ("Low RealMemory"), so cap the ~20 GB default at 90% of RAM.
  local mem; mem=$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)
  (( mem <= 20000 )) || mem=20000
  mkdir -p "$DIR/state" "$DIR/spool" /etc/slurm
  # Pin addresses to loopback so a hostname without a DNS/hosts entry still works.
  # A requeued job stays pending until its old credential expires (cred_expire,
  # default 120 s) and then waits for the next scheduler pass (60 s/30 s
  # backfill); shrink both so requeue tests restart within ~15 s.
  cat > "$CONF" <<EOF
# Written by cltrain scripts/slurm/local_cluster.sh for DIR=$DIR
ClusterName=local
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2,bf_interval=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc --all) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0700 /etc/munge   # munged refuses a key in a group/world-accessible dir
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    elif command -v create-munge-key >/dev/null; then create-munge-key -f
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  fi
  # Reuse a munged someone else started; only record (and later stop) our own.
  if ! live_pid "$MUNGE_PID" munged >/dev/null; then
    runuser -u munge -- munged || die "munged failed to start (see /var/log/munge/munged.log)"
    touch "$DIR/munged.started"
  fi
  for _ in $(seq 25); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "munge -n | unmunge fails: munge authentication is broken"
}

wait_pidfile() { # pidfile comm log
  for _ in $(seq 50); do live_pid "$1" "$2" >/dev/null && return 0; sleep 0.2; done
  die "$2 did not start; last lines of $3:$(echo; tail -n 20 "$3" 2>/dev/null)"
}

cmd_start() {
  if ! command -v slurmctld >/dev/null; then
    echo "local_cluster: installing slurm-wlm..."
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null || die "apt-get install slurm-wlm failed"
  fi
  mkdir -p "$DIR"
  local ctld sd; ctld=$(live_pid "$DIR/slurmctld.pid" slurmctld || true)
  sd=$(live_pid "$DIR/slurmd.pid" slurmd || true)
  # slurm.conf is global: refuse to clobber a cluster that another DIR runs.
  if [[ -z $ctld ]] && other=$(grep -o '^SlurmctldPidFile=.*' "$CONF" 2>/dev/null | cut -d= -f2-) \
     && [[ $other != "$DIR/slurmctld.pid" ]] && live_pid "$other" slurmctld >/dev/null; then
    die "a cluster from another DIR is running ($other); stop it first"
  fi
  start_munge
  if [[ -n $ctld && -n $sd ]] && node_up && slurmd_registered; then echo "SLURM ready (already running from $DIR)"; return 0; fi
  # Only rewrite the config when nothing of ours runs, so live daemons never see a changed file.
  [[ -z $ctld && -z $sd ]] && write_conf
  if [[ -z $ctld ]]; then slurmctld || die "slurmctld failed"; wait_pidfile "$DIR/slurmctld.pid" slurmctld "$DIR/slurmctld.log"; fi
  if [[ -z $sd ]]; then slurmd || die "slurmd failed"; wait_pidfile "$DIR/slurmd.pid" slurmd "$DIR/slurmd.log"; fi
  # Bound by wall time, not iterations: an unresponsive controller makes each sinfo slow.
  local s deadline=$((SECONDS + 60))
  while (( SECONDS < deadline )); do
    node_up && slurmd_registered && { echo "SLURM ready"; sinfo; return 0; }
    # A daemon can write its pid file and then die (e.g. port 6817 in use): fail fast.
    live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null || die "slurmctld exited:$(echo; tail -n 5 "$DIR/slurmctld.log")"
    live_pid "$DIR/slurmd.pid" slurmd >/dev/null || die "slurmd exited:$(echo; tail -n 5 "$DIR/slurmd.log")"
    s=$(node_state)
    # A node left down/drained by an earlier run (e.g. killed slurmd) needs an explicit resume.
    if [[ $s =~ ^(down|drain|drng) ]]; then scontrol update nodename="$H" state=resume >/dev/null 2>&1 || true; fi
    sleep 1
  done
  die "node $H not idle after 60 s (state '${s:-?}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

cmd_stop() {
  stop_pid "$DIR/slurmd.pid" slurmd
  stop_pid "$DIR/slurmctld.pid" slurmctld
  if [[ -e $DIR/munged.started ]]; then stop_pid "$MUNGE_PID" munged; rm -f "$DIR/munged.started"; fi
  echo "SLURM stopped"
}

cmd_status() {
  command -v sinfo >/dev/null || die "slurm is not installed"
  timeout 5 sinfo || true
  node_up
}

case $CMD in
  start) cmd_start ;; stop) cmd_stop ;; status) cmd_status ;;
  *) die "unknown command '$CMD' (start|stop|status)" ;;
esac

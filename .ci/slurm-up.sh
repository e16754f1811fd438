#!/usr/bin/env bash
# Start a single-node Slurm cluster (Debian 12 packages) on loopback for the launcher test; PIDs of the daemons go
# to $SLURM_CI_DIR/pids (stop with slurm-down.sh). The recipe was measured on this kind of machine: no systemd,
# no usable cgroups (so proctrack/linuxproc + task/none), ~5 s from a fresh install. Exit 3: packages could not
# be installed (the caller skips the test); other failures exit 1.
set -euo pipefail
SLURM_CI_DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
export DEBIAN_FRONTEND=noninteractive
wait_for() { # wait_for <seconds> <cmd...>
	local n=$(($1 * 10))
	shift
	for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "timeout waiting for: $*" >&2
	return 1
}
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
	(apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge >/dev/null) || exit 3
fi
rm -rf "$SLURM_CI_DIR"
mkdir -p "$SLURM_CI_DIR"/{state,spool,log}
: >"$SLURM_CI_DIR/pids"
NODEHW=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_CI_DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
DependencyParameters=kill_invalid_depend
ReturnToService=2
StateSaveLocation=$SLURM_CI_DIR/state
SlurmdSpoolDir=$SLURM_CI_DIR/spool
SlurmctldPidFile=$SLURM_CI_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_CI_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_CI_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_CI_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost NodeAddr=127.0.0.1 $NODEHW State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
[ -s /etc/munge/munge.key ] || mungekey -c -k /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
chmod 600 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
runuser -u munge -- /usr/sbin/munged </dev/null >"$SLURM_CI_DIR/log/munged.out" 2>&1
cat /run/munge/munged.pid >>"$SLURM_CI_DIR/pids"
wait_for 10 bash -c 'munge -n | unmunge'
slurmctld -D </dev/null >"$SLURM_CI_DIR/log/slurmctld.out" 2>&1 &
echo $! >>"$SLURM_CI_DIR/pids"
slurmd -D -N localhost </dev/null >"$SLURM_CI_DIR/log/slurmd.out" 2>&1 &
echo $! >>"$SLURM_CI_DIR/pids"
wait_for 30 bash -c 'sinfo -h -o %T | grep -qx idle'
sinfo

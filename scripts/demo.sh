#!/usr/bin/env bash
# One command, on a fresh Debian or Ubuntu machine as root: install everything,
# deploy a single-host mirror (inventories/local), write a sample tree into the
# primary, wait for the copy, audit it and print a one-screen result.
#
#   bash scripts/demo.sh           # make demo
#   bash scripts/demo.sh remove    # make demo-remove: stop and remove what the demo made
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)
log=/var/tmp/hpc_mirror_demo.log
# Whether RabbitMQ and the Erlang port mapper ran before the first demo, for remove.
state=/var/tmp/hpc_mirror_demo.state
audit_dir=/var/tmp/hpc_mirror_demo_audit

say() { printf '%s\n' "$*"; }
run() { "$@" >>"$log" 2>&1 || { say "FAILED: $* (see $log)"; tail -n 25 "$log"; exit 1; }; }

[ "$(id -u)" = 0 ] || { say "make demo installs packages and creates the user opsm: run it as root"; exit 1; }
command -v apt-get >/dev/null || { say "make demo needs a Debian or Ubuntu machine (apt-get)"; exit 1; }

user=opsm
primary=/var/tmp/hpc_mirror/primary
secondary=/var/tmp/hpc_mirror/secondary
inventory=inventories/local
flow=mirror_primary_to_secondary

running() { pgrep "$@" >/dev/null && echo running || echo stopped; }

remove() {
  : >"$log"
  say "removing the demo: its flow, the user $user and $primary, $secondary"
  export PATH=$PWD/.venv/bin:$PATH
  if id "$user" >/dev/null 2>&1 && [ -x .venv/bin/ansible-playbook ] && pgrep -u rabbitmq -x beam.smp >/dev/null; then
    ansible-playbook -i "$inventory" remove.yml -e remove_confirm=primary_to_secondary >>"$log" 2>&1 \
      || say "remove.yml failed (see $log): removing the rest anyway"
  fi
  if id "$user" >/dev/null 2>&1; then
    # whatever of the user's still runs (remove.yml stopped the flow): by pid
    pids=$(pgrep -u "$user" || true)
    [ -z "$pids" ] || { kill $pids 2>/dev/null || true; sleep 2; kill -KILL $(pgrep -u "$user") 2>/dev/null || true; }
    run userdel --remove "$user"
  fi
  if pgrep -u rabbitmq -x beam.smp >/dev/null; then
    rabbitmqctl -q delete_user "$user" >>"$log" 2>&1 || true
    rabbitmqctl -q delete_vhost hpc_mirror >>"$log" 2>&1 || true
  fi
  read -r broker_before epmd_before 2>/dev/null <"$state" || true
  if [ "${broker_before:-}" = stopped ] && pgrep -u rabbitmq -x beam.smp >/dev/null; then
    run rabbitmqctl -q shutdown
  fi
  if [ "${epmd_before:-}" = stopped ] && pgrep -x epmd >/dev/null; then epmd -kill >>"$log" 2>&1 || true; fi
  rm -rf /var/tmp/hpc_mirror "$audit_dir" "$state" "$HOME/.config/hpc_mirror/local_broker_password"
  say "removed; left in place: the distribution packages, .venv, /etc/rabbitmq/{rabbitmq.conf,enabled_plugins}, $log"
}

case "${1:-}" in
  "") ;;
  remove) remove; exit 0 ;;
  *) say "usage: $0 [remove]"; exit 2 ;;
esac
: >"$log"
[ -f "$state" ] || echo "$(running -u rabbitmq -x beam.smp) $(running -x epmd)" >"$state"

say "1/5 installing system packages and the Ansible virtualenv (.venv)"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null || ! command -v make >/dev/null; then
  run apt-get update -q
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv python3-pip make
fi
run make venv
export PATH=$PWD/.venv/bin:$PATH

say "2/5 creating the ops user '$user' and the primary tree $primary"
id "$user" >/dev/null 2>&1 || run useradd --create-home --shell /bin/bash "$user"
run install -d -o "$user" -m 0755 /var/tmp/hpc_mirror "$primary"

say "3/5 deploying: RabbitMQ, sr3 for $user, the mirror flow (ansible-playbook deploy.yml)"
run ansible-playbook -i "$inventory" deploy.yml
hold=$(ansible-inventory -i "$inventory" --host hpc-local \
  | python3 -c 'import json, sys; print(json.load(sys.stdin).get("hpc_mirror_hold", 30))')

home=$(getent passwd "$user" | cut -d: -f6)
tally=$home/.cache/sr3/metrics/shovel_mirror_primary_to_secondary_tally_01.json
# Tally totals before the sample, so the summary counts the sample alone.
tally_before=$(python3 -c 'import json, sys
try:
    totals = json.load(open(sys.argv[1]))["hpc_mirror_tally"]["totals"]
except (OSError, ValueError, KeyError):
    totals = {}
print(json.dumps(totals))' "$tally")

say "4/5 writing a sample tree into $primary and waiting for the copy (hold ${hold}s)"
demo=$primary/demo-$(date +%Y%m%d-%H%M%S)
runuser -u "$user" -- bash -e -c "
  mkdir -p '$demo/results/run1' '$demo/src/lib' '$demo/scratch'
  for i in \$(seq 1 50); do echo \"result \$i\" > '$demo/results/run1/out_'\$i'.txt'; done
  head -c 3000000 /dev/urandom > '$demo/results/run1/big.bin'
  # above sr3's accelThreshold (1 MiB), with a space in its name
  head -c 2000000 /dev/urandom > '$demo/results/run1/big file.bin'
  # a name beyond ASCII
  echo 'bonjour' > '$demo/results/café.txt'
  printf 'int main(void) { return 0; }\n' > '$demo/src/main.c'
  echo 'draft' > '$demo/src/lib/util.c.new'
  mv '$demo/src/lib/util.c.new' '$demo/src/lib/util.c'
  ln -s results/run1 '$demo/latest'
  echo 'temporary' > '$demo/scratch/delete_me'
  rm '$demo/scratch/delete_me'
"
wait_json=$(python3 scripts/wait_mirrored.py "$demo" "${secondary}${demo#"$primary"}" $((hold + 180))) || true

say "5/5 auditing the whole mirror (ansible-playbook audit.yml)"
# A report directory of this run only: the summary reads the files audit.yml writes there.
rm -rf "$audit_dir"
audit_started=$(date +%s.%N)
audit_rc=0
ansible-playbook -i "$inventory" audit.yml -e audit_report_dir="$audit_dir" >>"$log" 2>&1 || audit_rc=$?
summary_rc=0
python3 scripts/demo_summary.py --wait "$wait_json" --hold "$hold" --started "$started" \
  --audit-rc "$audit_rc" --audit-dir "$audit_dir" --audit-started "$audit_started" --flow "$flow" \
  --tally "$tally" --tally-before "$tally_before" --primary "$primary" --secondary "$secondary" || summary_rc=$?
say "log: $log   audit report: $audit_dir"
say "status: runuser -u $user -- ~$user/.local/share/hpc_mirror/venv/bin/sr3 status   remove: make demo-remove"
exit "$summary_rc"

#!/usr/bin/env bash
# One command, on a fresh Debian or Ubuntu machine as root: install everything,
# deploy a single-host mirror (inventories/local), write a sample tree into the
# primary, wait for the copy, audit it and print a one-screen result.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)
log=/var/tmp/hpc_mirror_demo.log
: >"$log"

say() { printf '%s\n' "$*"; }
run() { "$@" >>"$log" 2>&1 || { say "FAILED: $* (see $log)"; tail -n 25 "$log"; exit 1; }; }

[ "$(id -u)" = 0 ] || { say "make demo installs packages and creates the user opsm: run it as root"; exit 1; }
command -v apt-get >/dev/null || { say "make demo needs a Debian or Ubuntu machine (apt-get)"; exit 1; }

user=opsm
primary=/var/tmp/hpc_mirror/primary
secondary=/var/tmp/hpc_mirror/secondary
inventory=inventories/local

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
  printf 'int main(void) { return 0; }\n' > '$demo/src/main.c'
  echo 'draft' > '$demo/src/lib/util.c.new'
  mv '$demo/src/lib/util.c.new' '$demo/src/lib/util.c'
  ln -s results/run1 '$demo/latest'
  echo 'temporary' > '$demo/scratch/delete_me'
  rm '$demo/scratch/delete_me'
"
written=$(date +%s.%N)
wait_json=$(python3 scripts/wait_mirrored.py "$demo" "${secondary}${demo#"$primary"}" $((hold + 180))) || true

say "5/5 auditing the whole mirror (ansible-playbook audit.yml)"
audit_rc=0
ansible-playbook -i "$inventory" audit.yml >>"$log" 2>&1 || audit_rc=$?
differences=$(sed -n 's/.*differences: \([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
entries=$(sed -n 's/.*entries: source \([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
python3 - "$wait_json" "$hold" "$started" "$written" "${differences:-?}" "${entries:-?}" "$audit_rc" "$tally" "$tally_before" <<'PY'
import json, sys, time
wait, hold, started, written, differences, entries, audit_rc, tally, before = sys.argv[1:]
wait, hold, before = json.loads(wait), float(hold), json.loads(before)
print()
print("=" * 64)
print("sr3.hpc_mirror demo: /var/tmp/hpc_mirror/primary -> /var/tmp/hpc_mirror/secondary")
print("-" * 64)
state = "mirrored" if wait["converged"] else "NOT mirrored after %.0f s" % wait["seconds"]
print("sample tree     %d files (%.1f MB), %d entries: %s" % (wait["files"], wait["bytes"] / 1e6, wait["entries"], state))
print("time to copy    %.1f s after the last write (hold %.0f s, lag beyond the hold %.1f s)"
      % (wait["seconds"], hold, max(0.0, wait["seconds"] - hold)))
# The tally's metrics file is rewritten every few seconds: wait until it counted the sample.
report, deadline = {}, time.time() + 30
while time.time() < deadline:
    try:
        report = json.load(open(tally)).get("hpc_mirror_tally", {})
    except (OSError, ValueError):
        report = {}
    if report.get("totals", {}).get("files", 0) - before.get("files", 0) >= wait["files"]:
        break
    time.sleep(1)
totals = report.get("totals", {})
print("tally           %d files, %.1f MB delivered; age of the last files when tallied mean %.1f s, max %.1f s"
      % (totals.get("files", 0) - before.get("files", 0), (totals.get("bytes", 0) - before.get("bytes", 0)) / 1e6,
         report.get("age_mean", 0), report.get("age_max", 0)))
print("audit           %s entries in the primary, %s differences%s"
      % (entries, differences, "" if audit_rc == "0" else "  (AUDIT FAILED)"))
print("demo took       %.0f s in all" % (time.time() - float(started)))
print("=" * 64)
print("log: /var/tmp/hpc_mirror_demo.log   status: runuser -u opsm -- ~opsm/.local/share/hpc_mirror/venv/bin/sr3 status")
sys.exit(0 if wait["converged"] and audit_rc == "0" else 1)
PY

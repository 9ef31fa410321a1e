"""Failover and failback for real, on the namespace test bed.

One story, in order (pytest runs the tests of a module in file order):
deploy (converge) -> workload on the primary, mirrored -> writes on the primary
inside the hold (a rewrite, new files, a delete, a rename) and at once an outage
of both hpc1 nodes (their sr3 killed, links unplugged) -> failover.yml while they
are down -> changes on the secondary (the same file rewritten too) -> the primary
comes back -> failover.yml again (replay; the outage window kept aside and
reported, promptly) -> the primary equals the secondary outside the conflict
area, no version lost; audit clean -> refusals (both directions active; failback
with conflicts unsettled; failback with a difference pending) -> conflicts
settled (keep some, discard the rest) -> failback.yml -> the kept versions and
new writes on the primary mirror forward; audit clean.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "default", "tests"))
from testbed import node, tree_state, wait_until_equal  # noqa: E402

testinfra_hosts = ["hpc2n1"]

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
INVENTORY = os.path.dirname(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent/x"))
TESTBED = os.path.join(PROJECT, "tests", "testbed", "netns_testbed.py")
PRIMARY_NODES = ["hpc1n1", "hpc1n2"]
SR3 = "/home/opsM/.local/share/hpc_mirror/venv/bin/sr3"
DIRECTION_FILE = "/home/opsM/.config/hpc_mirror/direction.json"
DURATIONS = {}
AREA = ".hpc_mirror"
# The primary's versions written inside the hold just before the outage: path -> sha256.
WINDOW = {}
# Those the secondary cannot have had: kept aside in any case. (The rename may
# reach the secondary before the outage: the forward copiers there rename
# without reading the primary.)
MUST_KEEP = ["fo/window/f3", "fo/window/late/l1", "fo/window/late/l2", "fo/window/late/l3"]
# What the secondary wrote to the same file during the outage.
SECONDARY_F3 = "fo/window/f3 rewritten on the secondary during the outage\n"


def playbook(name, *extra):
    started = time.time()
    result = subprocess.run(["ansible-playbook", "-i", INVENTORY, name] + list(extra), cwd=PROJECT,
                            capture_output=True, text=True, check=False,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    DURATIONS.setdefault(name, []).append(round(time.time() - started))
    # The callback wraps long messages: compare with whitespace folded.
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def netns(action, *hosts):
    subprocess.run([sys.executable, TESTBED, action] + list(hosts), check=True, capture_output=True)


def write(host, script):
    result = host.run("bash -c %s", "set -e\n" + script)
    assert result.rc == 0, result.stderr


def outside_area(state):
    return dict((path, value) for path, value in state.items() if path != AREA and not path.startswith(AREA + "/"))


def wait_until_equal_outside_area(source_host, source_root, destination_host, destination_root, timeout=180):
    """Both trees, without the conflict area, once equal (or at the timeout)."""
    deadline = time.time() + timeout
    while True:
        source = outside_area(tree_state(source_host, source_root))
        destination = outside_area(tree_state(destination_host, destination_root))
        if source == destination or time.time() > deadline:
            return source, destination
        time.sleep(2)


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def record(host):
    return json.loads(host.file(DIRECTION_FILE).content_string)


def conflicts(host, generation):
    path = "/fs/primary/%s/conflicts/%s/conflicts.jsonl" % (AREA, generation)
    return [json.loads(line) for line in host.file(path).content_string.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def hosts():
    return {name: node(name) for name in ("hpc1n1", "hpc1n2", "hpc2n1", "hpc2n2")}


@pytest.fixture(scope="module", autouse=True)
def primary_back_at_the_end():
    yield
    # Whatever failed, leave the links up for destroy and for a rerun.
    netns("restore", *PRIMARY_NODES)
    print("playbook durations (s):", DURATIONS)


def test_forward_mirror_before_the_outage(hosts):
    write(hosts["hpc1n1"], '''
cd /fs/primary
mkdir -p fo/keep fo/dir-to-rename/sub fo/to-delete
echo kept > fo/keep/kept.txt
head -c 1500000 /dev/urandom > fo/keep/big.bin
echo "original" > fo/keep/overwrite-me.txt
echo a > fo/dir-to-rename/a.txt
echo b > fo/dir-to-rename/sub/b.txt
echo gone > fo/to-delete/gone.txt
echo moving > fo/keep/rename-me.txt
mkdir -p fo/window
echo "fo/window/f3 as mirrored" > fo/window/f3
echo "deleted on the primary just before the outage" > fo/window/del-me.txt
echo "renamed on the primary just before the outage" > fo/window/ren-me.txt
''')
    source, destination = wait_until_equal(hosts["hpc1n1"], "/fs/primary", hosts["hpc2n1"], "/fs/secondary")
    assert source == destination


def test_failover_while_the_primary_is_down(hosts):
    # Inside the hold (3 s), just before the outage: the secondary never gets these.
    write(hosts["hpc1n1"], '''
cd /fs/primary/fo/window
echo "fo/window/f3 rewritten on the primary just before the outage" > f3
mkdir -p late
for i in 1 2 3; do echo "late file $i, only on the primary" > late/l$i; done
rm del-me.txt
mv ren-me.txt ren-new.txt
''')
    netns("cut", *PRIMARY_NODES)
    WINDOW.update({
        "fo/window/f3": sha("fo/window/f3 rewritten on the primary just before the outage\n"),
        "fo/window/ren-new.txt": sha("renamed on the primary just before the outage\n"),
    })
    WINDOW.update(("fo/window/late/l%d" % i, sha("late file %d, only on the primary\n" % i)) for i in (1, 2, 3))
    rc, output = playbook("failover.yml")
    assert rc == 0, output[-4000:]
    assert "Not reachable: hpc1n1, hpc1n2" in output
    assert '"direction": "secondary_to_primary"' in hosts["hpc2n1"].file(DIRECTION_FILE).content_string
    # The outage window starts at the forward direction's last delivery - hold - 60 s.
    since = record(hosts["hpc2n1"])["since"]
    assert 0 < since < time.time() - 60, since
    # Forward copiers fenced, reverse posting runs on the secondary.
    processes = hosts["hpc2n1"].check_output("ps -eo args")
    assert "sarra/mirror_primary_to_secondary_copy" not in processes
    assert "watch/mirror_secondary_to_primary" in processes


def test_changes_on_the_secondary_during_the_outage(hosts):
    time.sleep(2)  # the reverse watch is up (sr3 start waited for it)
    write(hosts["hpc2n1"], '''
cd /fs/secondary/fo
mkdir -p outage/deep
echo new > outage/new.txt
head -c 2500000 /dev/urandom > outage/deep/big-new.bin
echo "overwritten during the outage" > keep/overwrite-me.txt
mv keep/rename-me.txt keep/renamed.txt
rm to-delete/gone.txt
rmdir to-delete
ln -s ../keep/kept.txt outage/link-to-kept
mv dir-to-rename dir-renamed
echo "fo/window/f3 rewritten on the secondary during the outage" > window/f3
''')
    # Nothing can reach the primary: the events wait in the broker's queues.


def test_failover_again_once_the_primary_is_back(hosts):
    netns("restore", *PRIMARY_NODES)
    since = record(hosts["hpc2n1"])["since"]
    rc, output = playbook("failover.yml")
    assert rc == 0, output[-5000:]
    assert "Failover stage 2" in output
    print("failover stage 2 took %d s" % DURATIONS["failover.yml"][-1])
    # Promptly: the outage window's extras are kept aside, not waited for (it took 1078 s).
    assert DURATIONS["failover.yml"][-1] < 600
    # The same generation keeps its window.
    assert record(hosts["hpc1n1"])["since"] == record(hosts["hpc2n1"])["since"] == since
    # The report names each version kept aside, where, and why.
    assert "conflicts of the outage window on hpc1n1:/fs/primary/.hpc_mirror/conflicts/" in output
    for path in MUST_KEEP:
        assert "%s: kept as .hpc_mirror/conflicts/" % path in output, path
    assert "exists only on the recovering side" in output and "changed in the outage window" in output
    for name in PRIMARY_NODES:
        processes = hosts[name].check_output("ps -eo args")
        assert "watch/mirror_primary_to_secondary" not in processes
    assert "sarra/mirror_secondary_to_primary_copy" in hosts["hpc1n1"].check_output("ps -eo args")


def test_primary_has_everything_written_during_the_outage(hosts):
    source, destination = wait_until_equal_outside_area(hosts["hpc2n1"], "/fs/secondary", hosts["hpc1n1"],
                                                        "/fs/primary")
    assert source == destination
    assert destination["fo/window/f3"][2] == sha(SECONDARY_F3)
    # Deleted on the primary inside the hold: the secondary's copy comes back, or (on a loaded
    # machine the cut can come after the hold) the removal reached the secondary before the outage.
    assert ("fo/window/del-me.txt" in destination) == ("fo/window/del-me.txt" in source)
    # Renamed there: the secondary's old name comes back (the new name is kept aside), or the
    # rename reached the secondary before the outage.
    assert ("fo/window/ren-me.txt" in destination) != ("fo/window/ren-new.txt" in destination)
    assert "fo/outage/deep/big-new.bin" in destination
    assert destination["fo/keep/overwrite-me.txt"] == source["fo/keep/overwrite-me.txt"]
    assert "fo/to-delete" not in destination and "fo/keep/rename-me.txt" not in destination
    assert destination["fo/outage/link-to-kept"] == ["link", "../keep/kept.txt"]
    assert "fo/dir-renamed/sub/b.txt" in destination and "fo/dir-to-rename" not in destination


def test_no_version_of_the_outage_window_is_lost(hosts):
    generation = record(hosts["hpc1n1"])["generation"]
    records = conflicts(hosts["hpc1n1"], generation)
    state = tree_state(hosts["hpc1n1"], "/fs/primary")
    kept = dict((r["path"], r) for r in records)
    for path, digest in WINDOW.items():
        # Each version of the window is in the conflict area, named in the report, or in the tree.
        if path in kept:
            assert state[kept[path]["kept"]][2] == digest, path
            assert kept[path]["recovering"]["size"] > 0
        else:
            assert path not in MUST_KEEP and state[path][2] == digest, (path, records)
    assert kept["fo/window/f3"]["reason"] == "changed in the outage window"
    assert kept["fo/window/f3"]["incoming"]["size"] == len(SECONDARY_F3)
    assert kept["fo/window/late/l1"]["reason"] == "exists only on the recovering side"
    assert kept["fo/window/late/l1"]["incoming"] is None
    # Every record points at a version that is there.
    for entry in records:
        assert entry["kept"] in state, entry


def test_audit_is_clean_in_the_reverse_direction():
    rc, output = playbook("audit.yml")
    assert rc == 0, output[-4000:]


def test_failover_refuses_both_directions_active(hosts):
    hpc1n1 = hosts["hpc1n1"]
    hpc1n1.check_output("%s start watch/mirror_primary_to_secondary", SR3)
    try:
        rc, output = playbook("failover.yml")
        assert rc != 0
        assert "Both directions are active" in output and "hpc1n1" in output
    finally:
        hpc1n1.check_output("%s stop watch/mirror_primary_to_secondary", SR3)


def test_failback_refuses_while_conflicts_are_unsettled(hosts):
    generation = record(hosts["hpc1n1"])["generation"]
    count = len(conflicts(hosts["hpc1n1"], generation))
    rc, output = playbook("failback.yml")
    assert rc != 0, output[-3000:]
    assert "%d conflicts of the outage window (generation %d" % (count, generation) in output, output[-3000:]
    assert "settle_conflicts.yml" in output
    assert '"direction": "secondary_to_primary"' in hosts["hpc2n1"].file(DIRECTION_FILE).content_string


def test_settle_conflicts(hosts):
    generation = record(hosts["hpc1n1"])["generation"]
    area = "/fs/primary/%s/conflicts/%s" % (AREA, generation)
    keep = ["fo/window/f3", "fo/window/late/l1", "fo/window/late/l2", "fo/window/late/l3"]
    paths = "-e", json.dumps({"hpc_mirror_conflict_paths": keep})
    rc, output = playbook("settle_conflicts.yml", "--check", "-e", "hpc_mirror_conflict_decision=keep", *paths)
    assert rc == 0, output[-3000:]
    assert "fo/window/f3: to be put back at failback" in output and "check mode" in output
    assert not hosts["hpc1n1"].file(area + "/settled.jsonl").exists
    rc, output = playbook("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=keep", *paths)
    assert rc == 0, output[-3000:]
    assert "fo/window/f3: to be put back at failback" in output
    rc, output = playbook("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=discard")
    assert rc == 0, output[-3000:]
    assert " 0 unsettled, 4 to put back at failback" in output, output[-3000:]
    assert not hosts["hpc1n1"].file(area + "/fo/window/ren-new.txt").exists
    # A rerun changes nothing.
    rc, output = playbook("settle_conflicts.yml", "-e", "hpc_mirror_conflict_decision=discard")
    assert rc == 0 and "nothing to settle" in output, output[-3000:]


def test_failback_refuses_with_a_difference_pending(hosts):
    # A file on the primary only: the trees differ.
    hosts["hpc1n1"].check_output("echo stray > /fs/primary/fo/stray.txt")
    try:
        rc, output = playbook("failback.yml")
        assert rc != 0, output[-3000:]
        assert "extra" in output
        assert '"direction": "secondary_to_primary"' in hosts["hpc2n1"].file(DIRECTION_FILE).content_string
    finally:
        hosts["hpc1n1"].check_output("rm /fs/primary/fo/stray.txt")


def test_failback(hosts):
    rc, output = playbook("failback.yml")
    assert rc == 0, output[-5000:]
    for name in PRIMARY_NODES + ["hpc2n1", "hpc2n2"]:
        assert '"direction": "primary_to_secondary"' in hosts[name].file(DIRECTION_FILE).content_string
    assert "watch/mirror_secondary_to_primary" not in hosts["hpc2n1"].check_output("ps -eo args")
    # The versions settled keep are back in the tree and carried forward; the one they replaced is kept aside.
    for path in ("fo/window/f3", "fo/window/late/l1", "fo/window/late/l2", "fo/window/late/l3"):
        assert "%s: put back into the tree" % path in output, path
    source, destination = wait_until_equal_outside_area(hosts["hpc1n1"], "/fs/primary", hosts["hpc2n1"],
                                                        "/fs/secondary")
    assert source == destination
    for path in ("fo/window/f3", "fo/window/late/l1", "fo/window/late/l3"):
        assert destination[path][2] == WINDOW[path], path
    aside = [state for path, state in tree_state(hosts["hpc1n1"], "/fs/primary/" + AREA).items()
             if path.endswith("fo/window/f3") or "fo/window/f3." in path]
    assert ["file", len(SECONDARY_F3), sha(SECONDARY_F3)] in aside, aside


def test_forward_mirror_after_failback(hosts):
    write(hosts["hpc1n2"], '''
cd /fs/primary/fo
mkdir -p after
echo "after failback" > after/one.txt
head -c 1200000 /dev/urandom > after/two.bin
rm keep/kept.txt
''')
    source, destination = wait_until_equal_outside_area(hosts["hpc1n1"], "/fs/primary", hosts["hpc2n1"],
                                                        "/fs/secondary")
    assert source == destination
    assert "fo/after/two.bin" in destination
    rc, output = playbook("audit.yml")
    assert rc == 0, output[-4000:]

"""Failover and failback for real, on the namespace test bed.

One story, in order (pytest runs the tests of a module in file order):
deploy (converge) -> workload on the primary, mirrored -> outage of both hpc1
nodes (their sr3 killed, links unplugged) -> failover.yml while they are down
-> changes on the secondary -> the primary comes back -> failover.yml again
(replay) -> the primary equals the secondary, deletes included; audit clean ->
refusals (both directions active; failback with a difference pending) ->
failback.yml -> new writes on the primary mirror forward again; audit clean.
"""

import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "default", "tests"))
from testbed import node, wait_until_equal  # noqa: E402

testinfra_hosts = ["hpc2n1"]

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
INVENTORY = os.path.dirname(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent/x"))
TESTBED = os.path.join(PROJECT, "tests", "testbed", "netns_testbed.py")
PRIMARY_NODES = ["hpc1n1", "hpc1n2"]
SR3 = "/home/opsM/.local/share/hpc_mirror/venv/bin/sr3"
DIRECTION_FILE = "/home/opsM/.config/hpc_mirror/direction.json"
DURATIONS = {}


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
''')
    source, destination = wait_until_equal(hosts["hpc1n1"], "/fs/primary", hosts["hpc2n1"], "/fs/secondary")
    assert source == destination


def test_failover_while_the_primary_is_down(hosts):
    netns("cut", *PRIMARY_NODES)
    rc, output = playbook("failover.yml")
    assert rc == 0, output[-4000:]
    assert "Not reachable: hpc1n1, hpc1n2" in output
    assert '"direction": "secondary_to_primary"' in hosts["hpc2n1"].file(DIRECTION_FILE).content_string
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
''')
    # Nothing can reach the primary: the events wait in the broker's queues.


def test_failover_again_once_the_primary_is_back(hosts):
    netns("restore", *PRIMARY_NODES)
    rc, output = playbook("failover.yml")
    assert rc == 0, output[-5000:]
    assert "Failover stage 2" in output
    for name in PRIMARY_NODES:
        processes = hosts[name].check_output("ps -eo args")
        assert "watch/mirror_primary_to_secondary" not in processes
    assert "sarra/mirror_secondary_to_primary_copy" in hosts["hpc1n1"].check_output("ps -eo args")


def test_primary_has_everything_written_during_the_outage(hosts):
    source, destination = wait_until_equal(hosts["hpc2n1"], "/fs/secondary", hosts["hpc1n1"], "/fs/primary")
    assert source == destination
    assert "fo/outage/deep/big-new.bin" in destination
    assert destination["fo/keep/overwrite-me.txt"] == source["fo/keep/overwrite-me.txt"]
    assert "fo/to-delete" not in destination and "fo/keep/rename-me.txt" not in destination
    assert destination["fo/outage/link-to-kept"] == ["link", "../keep/kept.txt"]
    assert "fo/dir-renamed/sub/b.txt" in destination and "fo/dir-to-rename" not in destination


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


def test_forward_mirror_after_failback(hosts):
    write(hosts["hpc1n2"], '''
cd /fs/primary/fo
mkdir -p after
echo "after failback" > after/one.txt
head -c 1200000 /dev/urandom > after/two.bin
rm keep/kept.txt
''')
    source, destination = wait_until_equal(hosts["hpc1n1"], "/fs/primary", hosts["hpc2n1"], "/fs/secondary")
    assert source == destination
    assert "fo/after/two.bin" in destination
    rc, output = playbook("audit.yml")
    assert rc == 0, output[-4000:]

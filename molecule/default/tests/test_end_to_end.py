"""End to end across the two clusters: a workload written on both hpc1 nodes
under /fs/primary appears identical under /fs/secondary on hpc2, copied over
sftp; then the audit playbook, run across the two hosts, passes."""

import json
import os
import subprocess
import time

import pytest

from testbed import node, wait_until_equal

testinfra_hosts = ["hpc2n1"]

PRIMARY, SECONDARY = "/fs/primary", "/fs/secondary"
FLOW = "mirror_primary_to_secondary"
COPIER = "sarra/%s_copy" % FLOW
QUEUE = "q_opsM.sarra.%s_copy" % FLOW
SR3 = "/home/opsM/.local/share/hpc_mirror/venv/bin/sr3"
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())

# Files of several sizes (two above the 1 MiB accelerator threshold), nested
# directories, a renamed file and directory, symlinks, a hard link, deletes.
WORKLOAD_HPC1N1 = r'''
set -e
cd /fs/primary/$RUN
mkdir -p e2e/n1/deep/er/still
head -c 0 /dev/urandom > e2e/n1/empty
head -c 4096 /dev/urandom > e2e/n1/small.dat
head -c 300000 /dev/urandom > e2e/n1/deep/medium.dat
head -c 3145728 /dev/urandom > e2e/n1/deep/er/large.dat
echo "first" > e2e/n1/overwritten.txt
echo "second, longer" > e2e/n1/overwritten.txt
echo moving > e2e/n1/before.txt
mv e2e/n1/before.txt e2e/n1/after.txt
mkdir -p e2e/n1/olddir/sub
echo a > e2e/n1/olddir/a.txt
echo b > e2e/n1/olddir/sub/b.txt
sleep 1
mv e2e/n1/olddir e2e/n1/newdir
ln -s deep/medium.dat e2e/n1/link-to-medium
ln -s ../n2 e2e/n1/link-to-dir
echo doomed > e2e/n1/doomed.txt
sleep 1
rm e2e/n1/doomed.txt
mkdir e2e/n1/emptydir
'''

WORKLOAD_HPC1N2 = r'''
set -e
cd /fs/primary/$RUN
mkdir -p e2e/n2/a/b/c
for i in $(seq 1 40); do echo "file $i from hpc1n2" > e2e/n2/a/b/c/f$i.txt; done
head -c 2000000 /dev/urandom > e2e/n2/two-megabytes.bin
echo x > e2e/n2/x.tmp
rm e2e/n2/a/b/c/f7.txt
mv e2e/n2/a/b/c/f8.txt e2e/n2/a/f8-renamed.txt
'''


@pytest.fixture(scope="module")
def mirrored():
    hpc1n1, hpc1n2, hpc2n1 = node("hpc1n1"), node("hpc1n2"), node("hpc2n1")
    # A directory of its own per run, so verify can run again on the same bed.
    run = "run-%d" % time.time()
    hpc1n1.check_output("mkdir /fs/primary/%s", run)
    for host, script in ((hpc1n1, WORKLOAD_HPC1N1), (hpc1n2, WORKLOAD_HPC1N2)):
        result = host.run("RUN=%s bash -c %s", run, script)
        assert result.rc == 0, result.stderr
    # *.tmp is rejected by the flow: not expected on the secondary.
    hpc1n2.run("rm -f /fs/primary/%s/e2e/n2/x.tmp", run)
    source, destination = wait_until_equal(hpc1n1, PRIMARY, hpc2n1, SECONDARY)
    return run, source, destination


def test_workload_is_mirrored_identically(mirrored):
    run, source, destination = mirrored
    assert run + "/e2e/n1/deep/er/large.dat" in source
    assert run + "/e2e/n1/newdir/sub/b.txt" in source and run + "/e2e/n1/olddir" not in source
    missing = sorted(set(source) - set(destination))
    extra = sorted(set(destination) - set(source))
    different = sorted(p for p in set(source) & set(destination) if source[p] != destination[p])
    assert (missing, extra, different) == ([], [], [])


def test_copies_crossed_the_network_over_sftp(mirrored):
    hpc2n1 = node("hpc2n1")
    logs = hpc2n1.run("cat ~/.cache/sr3/hpc2n*/log/sarra_*copy_*.log").stdout
    assert "sftp" in logs
    assert "hpc1any" in logs


def test_copiers_of_both_secondary_nodes_share_one_queue(mirrored):
    # Stop the copiers of hpc2n1: what is written next is copied by hpc2n2,
    # which consumes the same queue.
    hpc1n1, hpc2n1, hpc2n2 = node("hpc1n1"), node("hpc2n1"), node("hpc2n2")
    for n in (hpc2n1, hpc2n2):
        assert "queue declared %s" % QUEUE in n.check_output("cat ~/.cache/sr3/$(hostname)/log/sarra_*copy_01.log")
    hpc2n1.check_output("%s stop %s", SR3, COPIER)
    try:
        target = "%s/e2e/shared/one.txt" % mirrored[0]
        hpc1n1.check_output("mkdir -p /fs/primary/%s && echo shared > /fs/primary/%s", os.path.dirname(target), target)
        source, destination = wait_until_equal(hpc1n1, PRIMARY, hpc2n1, SECONDARY)
        assert source == destination
        assert target in hpc2n2.check_output("cat ~/.cache/sr3/hpc2n2/log/sarra_*copy_*.log")
    finally:
        hpc2n1.check_output("%s start %s", SR3, COPIER)


def test_audit_passes_across_the_clusters(mirrored):
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, os.path.join(PROJECT, "playbooks", "audit.yml")],
        cwd=PROJECT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def reported():
    """(path, category) of every difference of the last audit."""
    path = os.path.expanduser("~/.cache/hpc_mirror/audit/%s_differences.jsonl" % FLOW)
    with open(path, "rb") as fh:
        return sorted((d["path"], d["category"]) for d in map(json.loads, fh))


def test_audit_and_repair_across_the_clusters(mirrored):
    """Differences seeded on hpc2 are found exactly by the audit run on two
    hosts, and the repair re-posts them through the broker until they converge."""
    run = mirrored[0]
    hpc2n1 = node("hpc2n1")
    base = "/fs/secondary/%s/e2e/n1" % run
    hpc2n1.check_output(
        "rm {b}/small.dat && touch -r {b}/overwritten.txt /tmp/ref && printf 'SECOND, LONGER\\n' > {b}/overwritten.txt"
        " && touch -r /tmp/ref {b}/overwritten.txt && rm /tmp/ref && echo stray > {b}/stray.txt"
        " && chmod 600 {b}/after.txt".format(b=base))
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    audit = ["ansible-playbook", "-i", inventory, os.path.join(PROJECT, "playbooks", "audit.yml")]
    result = subprocess.run(audit, cwd=PROJECT, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    prefix = run + "/e2e/n1/"
    assert reported() == [(prefix + "after.txt", "mode"), (prefix + "overwritten.txt", "content"),
                          (prefix + "small.dat", "missing"), (prefix + "stray.txt", "extra")]
    result = subprocess.run(audit + ["-e", "audit_repair=true", "-e", "audit_repair_delete=true",
                                     "-e", "audit_repair_interval=3", "-e", "audit_repair_timeout=120"],
                            cwd=PROJECT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    source, destination = wait_until_equal(node("hpc1n1"), PRIMARY, hpc2n1, SECONDARY, timeout=30)
    assert source == destination
    assert hpc2n1.file(base + "/after.txt").mode == 0o644

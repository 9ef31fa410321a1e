"""Hostile file names across the two clusters (event source watch, transport
sftp): the generated corpus (tests/corpus/hostile_names.py, seed printed,
HPC_MIRROR_CORPUS_SEED to replay) is written on hpc1n1 by the ops user, as a job
would; the copy on hpc2 must end identical byte for byte (names as bytes,
contents, modes, mtimes, symlink targets), the audit run across the clusters
must find 0 differences under it, and a repair must carry every name back.

The trees are compared on the controller, where the test bed keeps each
cluster's /fs (tests/testbed/netns_testbed.py)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from testbed import ROOT, USER, node

testinfra_hosts = ["hpc2n1"]

PRIMARY = os.path.join(ROOT, "hpc1", "fs", "primary")      # /fs/primary on hpc1
SECONDARY = os.path.join(ROOT, "hpc2", "fs", "secondary")  # /fs/secondary on hpc2
FLOW = "mirror_primary_to_secondary"
REPORT = os.path.expanduser("~/.cache/hpc_mirror/audit/%s_differences.jsonl" % FLOW)
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
TIMEOUT = 240  # about 100 entries and two 1.5 MiB files over sftp: it converges in well under a minute
# sftp (protocol 3) gives whole seconds: a file's copy takes the sub-second part from its
# message (the poster's float, exact to about 0.3 us), a link's copy has whole seconds.
MTIME_TOLERANCE = 1.0

sys.path.insert(0, os.path.join(PROJECT, "tests", "corpus"))
import hostile_names  # noqa: E402  pylint: disable=wrong-import-position


def audit(*extra):
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    return subprocess.run(["ansible-playbook", "-i", inventory, os.path.join(PROJECT, "playbooks", "audit.yml")]
                          + list(extra), cwd=PROJECT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def corpus():
    """The corpus written on hpc1n1 by the ops user; its differences once the copy settled."""
    seed = hostile_names.seed_from()
    print("hostile names seed %d (%s=%d to replay)" % (seed, hostile_names.SEED_ENV, seed))
    # /tmp is the controller's on every test host: the script and manifest travel through it.
    work, script, manifest = hostile_names.staged_script(USER)
    result = node("hpc1n1").run("python3 %s write /fs/primary --seed %s --manifest %s", script, str(seed), manifest)
    assert result.rc == 0, result.stderr
    made = hostile_names.Corpus.load(manifest)
    top = b"hostile_%d" % seed
    diffs = hostile_names.wait_for_copy(PRIMARY, SECONDARY, top, TIMEOUT, quiet=5, mtime_tolerance=MTIME_TOLERANCE)
    print("corpus of %d entries, %d differences" % (len(made.entries), len(diffs)))
    for diff in diffs:
        print("  " + diff[2])
    yield made, diffs, top
    node("hpc1n1").run("rm -rf /fs/primary/%s", top.decode())
    shutil.rmtree(work, ignore_errors=True)
    # the tests after this one compare whole trees: wait until the removal reached hpc2
    deadline = time.time() + 60
    while os.path.lexists(os.path.join(os.fsencode(SECONDARY), top)) and time.time() < deadline:
        time.sleep(1)


def test_every_hostile_name_and_size_reaches_the_other_cluster(corpus):
    made, diffs, top = corpus
    classes = {cls.split(":")[0] for cls in made.entries.values()}
    assert {"latin1_not_utf8", "newline", "big_space", "near_path_max", "symlink_to_dir"} <= classes
    left = {}
    for category, rel, line in diffs:
        left.setdefault(hostile_names.class_of(made, os.path.join(top, rel)), []).append("%s: %s" % (category, line))
    assert left == {}, left


def test_audit_across_the_clusters_finds_no_difference_and_repairs_names(corpus):
    made, diffs, top = corpus
    if diffs:
        pytest.skip("the copy differs already (see the test above)")
    result = audit()
    assert hostile_names.reported_under(REPORT, top) == [], result.stdout[-3000:]
    # Remove the copies of one file of each class that is not ASCII or holds a control byte.
    victims = []
    for cls in ("latin1_not_utf8", "random_bytes", "newline", "tab", "cjk", "emoji", "nfc_nfd", "name_max",
                "leading_dash", "backslash", "near_path_max", "big_space"):
        rels = sorted(rel for rel, c in made.entries.items()
                      if c.split(":")[0] == cls and os.path.isfile(os.path.join(os.fsencode(PRIMARY), rel)))
        victims += rels[:1]
    assert len(victims) >= 10, victims
    for rel in victims:
        os.unlink(os.path.join(os.fsencode(SECONDARY), rel))
    audit()
    assert hostile_names.reported_under(REPORT, top) == sorted((os.fsdecode(rel), "missing") for rel in victims)
    result = audit("-e", "audit_repair=true", "-e", "audit_repair_interval=3", "-e", "audit_repair_timeout=120")
    assert result.returncode == 0, result.stdout[-4000:]
    assert hostile_names.reported_under(REPORT, top) == []
    assert hostile_names.wait_for_copy(PRIMARY, SECONDARY, top, 30, mtime_tolerance=MTIME_TOLERANCE) == []

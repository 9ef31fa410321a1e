"""Hostile file names, for real, on the single-host mirror (event source watch,
transport file): a generated corpus (tests/corpus/hostile_names.py, seed printed,
HPC_MIRROR_CORPUS_SEED to replay) is written into the primary tree by the ops
user; the copy must end identical byte for byte (names as bytes, contents,
modes, mtimes, symlink targets), audit.yml must find 0 differences and a repair
must carry every name back."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["broker-local"]

USER = "opsmtest"
PRIMARY = "/var/tmp/hpc_mirror_molecule/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule/secondary"
FLOW = "mirror_primary_to_secondary"
REPORT = os.path.expanduser("~/.cache/hpc_mirror/audit/%s_differences.jsonl" % FLOW)
HOLD = 3
# The whole corpus (about 100 entries, two files of 1.5 MiB) converges in seconds;
# the wait stops at the first moment the trees match.
TIMEOUT = 180

CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "corpus")
sys.path.insert(0, os.path.abspath(CORPUS_DIR))
import hostile_names  # noqa: E402  pylint: disable=wrong-import-position


def as_user(host, script):
    result = host.run("runuser -u %s -- bash -c %s", USER, script)
    assert result.rc == 0, result.stderr
    return result


def playbook(name, *extra):
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror." + name] + list(extra),
                          capture_output=True, text=True, check=False, env=dict(os.environ))


def is_big(cls):
    return cls == "big_space" or cls.startswith("big:")


def by_class(corpus, top, diffs):
    out = {}
    for diff in diffs:
        out.setdefault(hostile_names.class_of(corpus, top + b"/" + diff[1]), []).append(diff[2])
    return out


def settle(top, timeout, under=None):
    """Wait until the subtree top (or top/under) matches; the differences left, paths relative to top."""
    if under is None:
        return hostile_names.wait_for_copy(PRIMARY, SECONDARY, top, timeout, quiet=HOLD + 2)
    diffs = hostile_names.wait_for_copy(PRIMARY, SECONDARY, top + b"/" + under, timeout, quiet=HOLD + 2)
    return [(c, (under + b"/" + rel) if rel else under, line) for c, rel, line in diffs]


@pytest.fixture(scope="module")
def corpus(host):
    """The corpus written by the ops user into the primary, and the differences once the copy settled."""
    seed = hostile_names.seed_from()
    print("hostile names seed %d (%s=%d to replay)" % (seed, hostile_names.SEED_ENV, seed))
    work, script, manifest = hostile_names.staged_script(USER)
    # Written by the ops user, as jobs would: the mirror runs as that user.
    result = host.run("runuser -u %s -- python3 %s write %s --seed %s --manifest %s",
                      USER, script, PRIMARY, str(seed), manifest)
    assert result.rc == 0, result.stderr
    made = hostile_names.Corpus.load(manifest)
    top = b"hostile_%d" % seed
    start = time.time()
    diffs = settle(top, TIMEOUT)
    print("corpus of %d entries: %d differences after %.1f s" % (len(made.entries), len(diffs), time.time() - start))
    for diff in diffs:
        print("  " + diff[2])
    yield made, diffs, top
    as_user(host, "rm -rf %s/%s" % (PRIMARY, top.decode()))
    shutil.rmtree(work, ignore_errors=True)
    # The tests after this one compare whole trees: wait until the removal reached the copy.
    deadline = time.time() + TIMEOUT
    while os.path.lexists(os.path.join(os.fsencode(SECONDARY), top)) and time.time() < deadline:
        time.sleep(1)


def test_corpus_covers_every_class(corpus):
    made, _diffs, _top = corpus
    classes = {cls.split(":")[0] for cls in made.entries.values()}
    for expected in list(hostile_names.NAME_CLASSES) + ["big_space", "big", "deep_tree", "near_path_max",
                                                        "hardlink", "empty_dir", "symlink_to_dir", "dir"]:
        assert expected in classes, expected


def test_every_hostile_name_reaches_the_copy(corpus):
    made, diffs, top = corpus
    left = by_class(made, top, [diff for diff in diffs
                                if not is_big(hostile_names.class_of(made, top + b"/" + diff[1]))])
    assert left == {}, json.dumps(left, indent=1, ensure_ascii=True)


def test_large_files_with_hostile_names_reach_the_copy(corpus):
    made, diffs, top = corpus
    big = by_class(made, top, [diff for diff in diffs if is_big(hostile_names.class_of(made, top + b"/" + diff[1]))])
    assert big == {}, json.dumps(big, indent=1, ensure_ascii=True)


def test_symlinks_keep_their_mtime(corpus):
    """sr3 3.3.1 made links without their own mtime; the copier makes them with it (hpc_mirror_files)."""
    _made, diffs, _top = corpus
    assert [diff[2] for diff in diffs if diff[0] == "symlink_mtime"] == []


def test_directories_with_a_dollar_keep_their_name(corpus):
    """sr3 3.3.1 dropped every '$' of a directory name and expanded ${...} in it (hpc_mirror_dollar)."""
    _made, diffs, _top = corpus
    assert [diff[2] for diff in diffs if b"$" in diff[1]] == []


def test_audit_finds_no_difference(corpus):
    _made, diffs, top = corpus
    if diffs:
        pytest.skip("the copy differs already (see test_every_hostile_name_reaches_the_copy)")
    result = playbook("audit")
    assert hostile_names.reported_under(REPORT, top) == [], result.stdout[-3000:]


def test_audit_names_and_repair_carries_hostile_names(host, corpus):
    made, diffs, top = corpus
    if diffs:
        pytest.skip("the copy differs already (see test_every_hostile_name_reaches_the_copy)")
    # Remove the copies of one file of each name class that is not ASCII or holds a control byte.
    wanted = ["latin1_not_utf8", "random_bytes", "newline", "trailing_newline", "tab", "cjk", "emoji",
              "nfc_nfd", "name_max", "leading_dash", "backslash", "dollar", "near_path_max", "deep_tree"]
    victims = []
    for cls in wanted:
        rels = sorted(rel for rel, c in made.entries.items()
                      if c == cls and os.path.lexists(os.path.join(os.fsencode(SECONDARY), rel)))
        victims += rels[:1]
    assert len(victims) >= len(wanted) - 2
    for rel in victims:
        os.unlink(os.path.join(os.fsencode(SECONDARY), rel))
    playbook("audit")
    assert hostile_names.reported_under(REPORT, top) == sorted((os.fsdecode(rel), "missing") for rel in victims)

    result = playbook("audit", "-e", "audit_repair=true", "-e", "audit_repair_interval=3",
                      "-e", "audit_repair_timeout=120")
    assert "repair: " in result.stdout, result.stdout[-4000:]
    assert hostile_names.reported_under(REPORT, top) == [], result.stdout[-4000:]
    assert hostile_names.compare_trees(PRIMARY, SECONDARY, under=top) == []


USER_SCRIPT = """
import os, sys
base = bytes.fromhex(sys.argv[1])
moved = bytes.fromhex(sys.argv[2])
if sys.argv[3] == "make":
    os.mkdir(base)
    os.symlink(b"../" + os.path.basename(base) + b"/target \\xe9", os.path.join(base, b"link \\xff\\n"))
    os.symlink(b"nowhere \\t", os.path.join(base, "lien é".encode()))
    with open(os.path.join(base, b"target \\xe9"), "wb") as fh:
        fh.write(b"x" * 4096)
    os.link(os.path.join(base, b"target \\xe9"), os.path.join(base, b"hard -link"))
    os.mkdir(os.path.join(base, "vide 空".encode()))
else:
    os.rename(base, moved)
"""


@pytest.fixture(scope="module")
def moved(host, corpus):
    """A directory of symlinks, a hard link and an empty directory, renamed to a hostile name once mirrored."""
    _made, diffs, top = corpus
    if diffs:
        pytest.skip("the copy differs already (see test_every_hostile_name_reaches_the_copy)")
    base = os.path.join(os.fsencode(PRIMARY), top, "links é\n dir".encode())
    target = os.path.join(os.fsencode(PRIMARY), top, b"moved \xe9\n\xff -dir")
    script = "/tmp/hpc_mirror_hostile_move.py"
    with open(script, "w") as fh:
        fh.write(USER_SCRIPT)
    os.chmod(script, 0o644)
    as_user(host, "python3 %s %s %s make" % (script, base.hex(), target.hex()))
    made_diffs = settle(top, 60, under=os.path.basename(base))
    assert [diff[2] for diff in made_diffs] == []
    as_user(host, "python3 %s %s %s move" % (script, base.hex(), target.hex()))
    left = settle(top, 60, under=os.path.basename(target))
    deadline = time.time() + 30
    while os.path.lexists(os.path.join(os.fsencode(SECONDARY), top, os.path.basename(base))):
        if time.time() > deadline:
            left.append(("extra", os.path.basename(base), "the old directory stays in the copy"))
            break
        time.sleep(1)
    return left


def is_empty_dir_missing(diff):
    return diff[0] == "missing" and os.path.basename(diff[1]) == "vide 空".encode()


def test_a_moved_hostile_directory_arrives_whole(moved):
    """Symlinks and a hard link inside a directory renamed to a hostile name; the old name is gone."""
    left = [diff[2] for diff in moved if not is_empty_dir_missing(diff)]
    assert left == [], "\n".join(left)


@pytest.mark.xfail(strict=False, reason="copier (not the posting side): an empty directory inside a renamed "
                                        "directory never reaches the copy (measured with sr3 watch, transport file)")
def test_an_empty_directory_in_a_moved_directory_arrives(moved):
    assert [diff[2] for diff in moved if is_empty_dir_missing(diff)] == []


def test_a_removed_hostile_tree_leaves_nothing_in_the_copy(host, corpus):
    """rm -r of the whole corpus: one removal per entry, parents' and children's through different winnows."""
    _made, _diffs, top = corpus
    as_user(host, "rm -rf %s/%s" % (PRIMARY, top.decode()))
    started = time.time()
    copy = os.path.join(os.fsencode(SECONDARY), top)
    while os.path.lexists(copy) and time.time() - started < 120:
        time.sleep(1)
    print("the copy of the removed tree was gone after %.1f s" % (time.time() - started))
    left = [os.path.join(d, n) for d, dirs, names in os.walk(copy) for n in dirs + names]
    assert not os.path.lexists(copy), left[:20]

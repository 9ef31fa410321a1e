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
import tempfile
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


def class_of(corpus, top, rel):
    """The corpus class of a relative path (under top): its own, or that of the closest listed parent."""
    path = top + b"/" + rel
    while path and path not in corpus.entries:
        path = os.path.dirname(path)
    return corpus.entries.get(path, "?")


def copier_bug(corpus, top, diff):
    """The known copier bug behind a difference (not the posting side), or None.

    - sr3 3.3.1 creates a symlink without setting its own mtime;
    - sr3 3.3.1 passes the copy's directory through sundew_dirPattern, which
      drops every '$' of a directory name (and variableExpansion substitutes
      ${...} in it): such a directory lands under another name.
    """
    category, rel, _detail = diff
    if category == "symlink_mtime":
        return "symlink mtime"
    if b"$" in os.path.dirname(rel):
        return "dollar in a directory name"
    if category == "extra":
        # The copy's name for a source directory with a '$': the first part of the path the
        # source lacks sits beside a source directory with a '$' in its name.
        base = os.path.join(os.fsencode(PRIMARY), top)
        parts = rel.split(b"/")
        for depth in range(1, len(parts) + 1):
            if not os.path.lexists(os.path.join(base, *parts[:depth])):
                parent = os.path.join(base, *parts[:depth - 1]) if depth > 1 else base
                if any(b"$" in name and os.path.isdir(os.path.join(parent, name)) for name in os.listdir(parent)):
                    return "dollar in a directory name"
                break
    return None


def by_class(corpus, top, diffs):
    out = {}
    for diff in diffs:
        out.setdefault(class_of(corpus, top, diff[1]), []).append(diff[2])
    return out


def names_differ(made, diffs, top):
    """Differences other than the copier's known bugs."""
    return [diff for diff in diffs if copier_bug(made, top, diff) is None]


def settle(made, top, timeout, under=None):
    """Wait until the subtree top (or top/under) matches but for the copier's known bugs; all differences."""
    deadline = time.time() + timeout
    where = top if under is None else top + b"/" + under

    def compare():
        diffs = hostile_names.compare_trees(PRIMARY, SECONDARY, under=where, detail=True)
        if under is not None:  # paths relative to top, as everywhere else
            diffs = [(c, (under + b"/" + rel) if rel else under, line) for c, rel, line in diffs]
        return diffs

    while True:
        diffs = compare()
        if not names_differ(made, diffs, top) or time.time() > deadline:
            if diffs:
                time.sleep(HOLD + 2)  # what is still in flight (a large file) has time to land
                diffs = compare()
            return diffs
        time.sleep(2)


def audit_report_under(top):
    """(path, category) of the last audit's differences under top; the others are printed (other tests' trees)."""
    with open(REPORT, "rb") as fh:
        reported = [(d["path"], d["category"]) for d in map(json.loads, fh)]
    prefix = os.fsdecode(top) + "/"
    others = [entry for entry in reported if not (entry[0] + "/").startswith(prefix)]
    if others:
        print("audit differences outside the corpus (not this test's): %r" % others[:20])
    return sorted(entry for entry in reported if (entry[0] + "/").startswith(prefix))


def bug_paths(made, diffs, top):
    """The audit's paths (str) of the differences a known copier bug explains."""
    return {os.fsdecode(top + b"/" + diff[1]) for diff in diffs if copier_bug(made, top, diff)}


@pytest.fixture(scope="module")
def corpus(host):
    """The corpus written by the ops user into the primary, and the differences once the copy settled."""
    seed = hostile_names.seed_from()
    print("hostile names seed %d (%s=%d to replay)" % (seed, hostile_names.SEED_ENV, seed))
    # A directory of this run only: files an earlier run or another user left in /tmp
    # (the ops user could not overwrite them) must not decide this one.
    work = tempfile.mkdtemp(prefix="hpc_mirror_hostile_names.")
    os.chmod(work, 0o755)
    shutil.chown(work, user=USER)
    script = os.path.join(work, "hostile_names.py")
    shutil.copy(os.path.join(CORPUS_DIR, "hostile_names.py"), script)
    os.chmod(script, 0o644)
    # Written by the ops user, as jobs would: the mirror runs as that user.
    manifest = os.path.join(work, "corpus.json")
    result = host.run("runuser -u %s -- python3 %s write %s --seed %s --manifest %s",
                      USER, script, PRIMARY, str(seed), manifest)
    assert result.rc == 0, result.stderr
    made = hostile_names.Corpus.load(manifest)
    top = b"hostile_%d" % seed
    start = time.time()
    diffs = settle(made, top, TIMEOUT)
    print("corpus of %d entries: %d differences after %.1f s" % (len(made.entries), len(diffs), time.time() - start))
    for diff in diffs:
        print("  %s%s" % (diff[2], " (copier: %s)" % copier_bug(made, top, diff) if copier_bug(made, top, diff) else ""))
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
    left = by_class(made, top, [diff for diff in names_differ(made, diffs, top)
                                if not is_big(class_of(made, top, diff[1]))])
    assert left == {}, json.dumps(left, indent=1, ensure_ascii=True)


def test_large_files_with_hostile_names_reach_the_copy(corpus):
    made, diffs, top = corpus
    big = by_class(made, top, [diff for diff in names_differ(made, diffs, top)
                               if is_big(class_of(made, top, diff[1]))])
    assert big == {}, json.dumps(big, indent=1, ensure_ascii=True)


@pytest.mark.xfail(strict=False, reason="copier (not the posting side): sr3 3.3.1 creates a symlink without "
                                        "setting its own mtime (os.utime(..., follow_symlinks=False)); the copy's "
                                        "link has the time the copier made it")
def test_symlinks_keep_their_mtime(corpus):
    made, diffs, top = corpus
    assert [diff[2] for diff in diffs if copier_bug(made, top, diff) == "symlink mtime"] == []


@pytest.mark.xfail(strict=False, reason="copier (not the posting side): sr3 3.3.1 computes the copy's directory "
                                        "with sundew_dirPattern, which drops every '$' of a directory name, and "
                                        "variableExpansion, which substitutes ${...} in it")
def test_directories_with_a_dollar_keep_their_name(corpus):
    made, diffs, top = corpus
    assert [diff[2] for diff in diffs if copier_bug(made, top, diff) == "dollar in a directory name"] == []


def test_audit_finds_no_difference(corpus):
    made, diffs, top = corpus
    if names_differ(made, diffs, top):
        pytest.skip("the copy differs already (see test_every_hostile_name_reaches_the_copy)")
    result = playbook("audit")
    # Only the copier's known difference (symlink mtimes, if the audit compares them) may show.
    known = bug_paths(made, diffs, top)
    assert [entry for entry in audit_report_under(top) if entry[0] not in known] == []
    if result.returncode == 0:
        assert "The mirror matches: 0 differences" in result.stdout


def test_audit_names_and_repair_carries_hostile_names(host, corpus):
    made, diffs, top = corpus
    if names_differ(made, diffs, top):
        pytest.skip("the copy differs already (see test_every_hostile_name_reaches_the_copy)")
    # Remove the copies of one file of each name class that is not ASCII or holds a control byte.
    wanted = ["latin1_not_utf8", "random_bytes", "newline", "trailing_newline", "tab", "cjk", "emoji",
              "nfc_nfd", "name_max", "leading_dash", "backslash", "near_path_max", "deep_tree"]
    victims = []
    for cls in wanted:
        # one that reached the copy (not below a directory the copier renames, see copier_bug)
        rels = sorted(rel for rel, c in made.entries.items()
                      if c == cls and os.path.lexists(os.path.join(os.fsencode(SECONDARY), rel)))
        if rels:
            victims.append(rels[0])
    assert len(victims) >= len(wanted) - 2
    for rel in victims:
        os.unlink(os.path.join(os.fsencode(SECONDARY), rel))
    playbook("audit")
    known = bug_paths(made, diffs, top)
    reported = [entry for entry in audit_report_under(top) if entry[0] not in known]
    assert reported == sorted((os.fsdecode(rel), "missing") for rel in victims)

    result = playbook("audit", "-e", "audit_repair=true", "-e", "audit_repair_interval=3",
                      "-e", "audit_repair_timeout=120")
    assert "repair: " in result.stdout, result.stdout[-4000:]
    assert [entry for entry in audit_report_under(top) if entry[0] not in known] == [], result.stdout[-4000:]
    assert names_differ(made, hostile_names.compare_trees(PRIMARY, SECONDARY, under=top, detail=True), top) == []


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
    made, diffs, top = corpus
    if names_differ(made, diffs, top):
        pytest.skip("the copy differs already (see test_every_hostile_name_reaches_the_copy)")
    base = os.path.join(os.fsencode(PRIMARY), top, "links é\n dir".encode())
    target = os.path.join(os.fsencode(PRIMARY), top, b"moved \xe9\n\xff -dir")
    script = "/tmp/hpc_mirror_hostile_move.py"
    with open(script, "w") as fh:
        fh.write(USER_SCRIPT)
    os.chmod(script, 0o644)
    as_user(host, "python3 %s %s %s make" % (script, base.hex(), target.hex()))
    made_diffs = names_differ(made, settle(made, top, 60, under=os.path.basename(base)), top)
    assert [diff[2] for diff in made_diffs] == []
    as_user(host, "python3 %s %s %s move" % (script, base.hex(), target.hex()))
    left = names_differ(made, settle(made, top, 60, under=os.path.basename(target)), top)
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

"""The hostile-name corpus (tests/corpus/hostile_names.py) posted by sr3c: under
the shim (a job's writes) or watched by sr3_cpost (plain commands). Shared by
test_hostile_names_shim.py and test_cpost_daemon.py.

sr3c 3.24.10 cannot post every name: it writes a name into its JSON message
without escaping (a quote, backslash or control byte, DEL too, makes the message
unreadable, and the winnow drops it) and omits relPath for a name that is not
UTF-8. Such files reach the copy through the audit's repair (sr3's own post),
as they would in production. What arrives through events, and what only
through the repair, is printed per name class for the closing note's table."""

import os
import shutil
import subprocess
import sys

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
INVENTORY = os.path.dirname(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent/x"))
USER = "opsmshim"
PRIMARY = "/var/tmp/hpc_mirror_molecule_shim/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule_shim/secondary"


sys.path.insert(0, os.path.join(PROJECT, "tests", "corpus"))
import hostile_names  # noqa: E402  pylint: disable=wrong-import-position


def sr3c_cannot_post(path):
    """A path sr3c 3.24.10 cannot post (see above): not UTF-8, or a control byte (DEL too), quote or backslash."""
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(byte < 0x20 or byte in b'\x7f"\\' for byte in path)


def sr3c_known_loss(rel):
    """Why sr3c loses this difference's path (rel: below PRIMARY), or None when it should not."""
    if sr3c_cannot_post(rel):
        return "name sr3c cannot post"
    if b"%20" in rel or b"%23" in rel:
        # sr3c writes ' ' and '#' as %20 and %23 but leaves '%' alone: such a name is ambiguous, and
        # a hard link's rename (below) landed under the decoded name; the repair removes it
        return "literal %20 or %23 in a name"
    source = os.path.join(os.fsencode(PRIMARY), rel)
    if os.path.islink(source) and sr3c_cannot_post(os.readlink(source)):
        return "link target sr3c cannot post"
    if os.path.isfile(source) and not os.path.islink(source) and os.lstat(source).st_nlink > 1:
        # below 3.24.12 a hard link is posted as a rename of its source (test_shim.py)
        return "hard link posted as a rename"
    return None


def write(host, posting):
    """Write the corpus as the ops user (posting: a command prefix, e.g. the shim wrapper); (corpus, top)."""
    seed = hostile_names.seed_from()
    print("hostile names seed %d (%s=%d to replay)" % (seed, hostile_names.SEED_ENV, seed))
    work, script, manifest = hostile_names.staged_script(USER)
    result = host.run("runuser -u %s -- bash -c %s", USER,
                      "cd && timeout 300 %s python3 %s write %s --seed %d --manifest %s"
                      % (posting, script, PRIMARY, seed, manifest))
    assert result.rc == 0, result.stderr[-3000:]
    made = hostile_names.Corpus.load(manifest)
    shutil.rmtree(work, ignore_errors=True)
    return made, b"hostile_%d" % seed


def by_class(made, top, diffs):
    out = {}
    for category, rel, line in diffs:
        out.setdefault(hostile_names.class_of(made, os.path.join(top, rel) if rel else top), []).append(
            "%s: %s" % (category, line))
    return out


def audit(*extra):
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.audit"] + list(extra),
                          capture_output=True, text=True, check=False, env=dict(os.environ))


def check(host, posting, source_name):
    """The whole story for one sr3c event source; removes the corpus at the end."""
    made, top = write(host, posting)
    try:
        # sr3c loses some names for good: stop once the differences stayed the same for 15 s
        after_events = hostile_names.wait_for_copy(PRIMARY, SECONDARY, top, 180, stable=15)
        lost = by_class(made, top, after_events)
        print("%s: corpus of %d entries, %d differences after the events, by class:"
              % (source_name, len(made.entries), len(after_events)))
        for cls, lines in sorted(lost.items()):
            print("  %s: %s" % (cls, "; ".join(lines)))
        ours = by_class(made, top, [diff for diff in after_events
                                    if sr3c_known_loss(os.path.join(top, diff[1]) if diff[1] else top) is None])
        # audit_repair_delete: sr3_cpost does not post an rmdir (test_cpost_daemon.py), so the copy may hold extras
        result = audit("-e", "audit_repair=true", "-e", "audit_repair_delete=true", "-e", "audit_repair_interval=3",
                       "-e", "audit_repair_timeout=180")
        after_repair = hostile_names.wait_for_copy(PRIMARY, SECONDARY, top, 30)
        print("%s: %d differences after the audit's repair (rc %d)" % (source_name, len(after_repair),
                                                                       result.returncode))
        for category, rel, line in after_repair:
            print("  " + line)
        assert ours == {}, "lost though sr3c can post these names: %r" % ours
        assert after_repair == [], result.stdout[-3000:]
        assert result.returncode == 0, result.stdout[-3000:]
        return made, lost
    finally:
        host.run("rm -rf %s/%s", PRIMARY, top.decode())
        host.run("rm -rf %s/%s", SECONDARY, top.decode())

# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whole-file copies (hpc_mirror_files) and the copier's download entry point, on real files.

The copier is driven as sr3 drives it: real sarracenia options and messages,
fields set by sr3's own updateFieldsAccepted, then after_accept, download and
after_work.  A copier killed in the middle of a copy is a real process killed
with SIGKILL.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import types

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FILES = os.path.join(ROOT, "roles", "mirror", "files")
sys.path.insert(0, FILES)
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))

import hpc_mirror_copier as copier  # noqa: E402
import hpc_mirror_files as files  # noqa: E402
from copier_driver import start_copier, work  # noqa: E402

NAMES = [b"plain.txt", "café.txt".encode(), "ünïcödé_日本.txt".encode(), "e\u0301".encode(), b"caf\xe9-latin1",
         b"tab\there", b"new\nline", b"%#*?[\\'\" ", b"-dash", b".dot", "🙂".encode(), b"x" * 255,
         b"big file.bin"]


def leftovers(top):
    return [os.path.join(d, n) for d, dirs, names in os.walk(top) for n in names + dirs
            if n.startswith(".hpc_mirror~")]


@pytest.fixture
def trees(tmp_path):
    source, destination = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    destination.mkdir()
    return str(source), str(destination)


# --------------------------------------------------------------------------
# hpc_mirror_files
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES, ids=lambda n: n.decode("utf-8", "backslashreplace")[:20])
def test_copy_any_name(trees, name):
    source, destination = trees
    path = os.path.join(os.fsencode(source), b"d", name)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(b"x" * 70000 + name)
    os.chmod(path, 0o4751)
    os.utime(path, ns=(1_000_000_123, 1_500_000_000_987_654_321))
    entry = files.open_source(source, b"d/" + name)
    try:
        with files.Destination(destination, b"d") as target:
            target.install_file(name, lambda fd: files.copy_data(entry.fd, fd), 0o751,
                                (entry.st.st_atime_ns, entry.st.st_mtime_ns))
    finally:
        entry.close()
    copy = os.path.join(os.fsencode(destination), b"d", name)
    with open(copy, "rb") as handle:
        assert handle.read() == b"x" * 70000 + name
    st = os.lstat(copy)
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert st.st_mtime_ns == 1_500_000_000_987_654_321
    assert leftovers(destination) == []


def test_a_link_is_read_not_followed(trees):
    source, destination = trees
    os.symlink("/etc/passwd", os.path.join(source, "link"))
    entry = files.open_source(source, "link")
    assert entry.kind == "link" and entry.target == b"/etc/passwd" and entry.fd is None
    with open(os.path.join(destination, "link"), "w") as handle:
        handle.write("a regular file the link replaces")
    with files.Destination(destination, "") as target:
        target.install_link("link", entry.target)
    assert os.readlink(os.path.join(destination, "link")) == "/etc/passwd"
    assert leftovers(destination) == []


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "./a", "", "/"])
def test_not_plain_relative_paths_are_refused(relative):
    with pytest.raises(files.Unsafe):
        files.components(relative)


def test_a_source_parent_that_is_a_link_is_refused(trees, tmp_path):
    source, destination = trees
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "credentials.conf").write_text("password")
    os.symlink(str(secret), os.path.join(source, "evil"))
    with pytest.raises(files.Unsafe):
        files.open_source(source, "evil/credentials.conf")


def test_a_destination_parent_that_is_a_link_is_refused(trees, tmp_path):
    source, destination = trees
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(destination, "evil"))
    with pytest.raises(files.Unsafe):
        files.Destination(destination, "evil/deeper")
    assert list(outside.iterdir()) == []


def test_a_failed_copy_keeps_the_old_file(trees):
    destination = trees[1]
    old = os.path.join(destination, "f")
    with open(old, "w") as handle:
        handle.write("old and good")

    def failing(fd):
        os.write(fd, b"half of the new")
        raise OSError(28, "No space left on device")
    with files.Destination(destination, "") as target:
        with pytest.raises(OSError):
            target.install_file("f", failing, 0o644, (0, 0))
    with open(old) as handle:
        assert handle.read() == "old and good"
    assert leftovers(destination) == []


KILLED_COPY = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    import hpc_mirror_files as files
    source, destination, marker = sys.argv[2:5]
    def slow(fd):
        with open(source, "rb") as handle:
            while True:
                block = handle.read(1 << 20)
                if not block:
                    return
                files.write_all(fd, block)
                open(marker, "w").close()
                time.sleep(0.05)
    def record(temporary):
        with open(marker + ".inflight", "wb") as handle:
            handle.write(temporary)
    with files.Destination(destination, "") as target:
        target.install_file("big file.bin", slow, 0o644, (0, 0), announce=record)
""")


def test_a_copier_killed_mid_copy_leaves_the_old_file(trees, tmp_path):
    source, destination = trees
    new = os.path.join(source, "big file.bin")
    with open(new, "wb") as handle:
        handle.write(os.urandom(1 << 20) * 64)
    old = os.path.join(destination, "big file.bin")
    with open(old, "wb") as handle:
        handle.write(b"old" * 1000)
    marker = str(tmp_path / "started")
    child = subprocess.Popen([sys.executable, "-c", KILLED_COPY, FILES, new, destination, marker])
    try:
        deadline = time.time() + 60
        while not os.path.exists(marker) and time.time() < deadline:
            time.sleep(0.01)
        assert os.path.exists(marker), "the copy never started"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    with open(old, "rb") as handle:
        assert handle.read() == b"old" * 1000
    left = leftovers(destination)
    assert len(left) == 1
    with open(marker + ".inflight", "rb") as handle:
        assert files.remove_leftover(destination, handle.read())
    assert leftovers(destination) == []


def test_remove_leftover_touches_only_our_names(trees):
    destination = trees[1]
    with open(os.path.join(destination, "precious"), "w"):
        pass
    with pytest.raises(files.Unsafe):
        files.remove_leftover(destination, b"precious")
    assert os.path.exists(os.path.join(destination, "precious"))
    assert files.remove_leftover(destination, b"gone/.hpc_mirror~0123456789ab") is False


# --------------------------------------------------------------------------
# the copier, driven as sr3 drives it
# --------------------------------------------------------------------------

@pytest.fixture
def running(trees, tmp_path, monkeypatch):
    """A Copier with real sr3 options (instance 2), and a function making accepted messages."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    state = tmp_path / "cache" / "sarra" / "copy"
    state.mkdir(parents=True)
    return start_copier(trees[0], trees[1], state, instance=2)


def test_copier_copies_a_setuid_file_without_setuid(running):
    path = os.path.join(running.source, "dir with space", "big file.bin")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(os.urandom(3 << 20))
    os.chmod(path, 0o4755)
    result = work(running, running.message("dir with space/big file.bin", mode="4755"))
    assert len(result.ok) == 1, result
    copy = os.path.join(running.destination, "dir with space", "big file.bin")
    with open(path, "rb") as one, open(copy, "rb") as two:
        assert one.read() == two.read()
    assert stat.S_IMODE(os.lstat(copy).st_mode) == 0o755
    assert os.lstat(copy).st_mtime_ns == os.lstat(path).st_mtime_ns
    assert result.ok[0]["mode"] == "755"


def test_copier_makes_a_link_of_a_link_posted_as_a_rename(running):
    """A symbolic link in a moved directory is posted as a plain rename: it must stay a link."""
    os.makedirs(os.path.join(running.source, "moved"))
    os.symlink("../target.txt", os.path.join(running.source, "moved", "link"))
    old = os.path.join(running.source, "old", "link")
    result = work(running, running.message("moved/link", fileOp={"rename": old}, size=4096))
    assert len(result.ok) == 1
    assert os.readlink(os.path.join(running.destination, "moved", "link")) == "../target.txt"


def test_copier_rejects_and_counts_hostile_messages(running, tmp_path):
    secret = tmp_path / "home" / ".config" / "sr3"
    secret.mkdir(parents=True)
    (secret / "credentials.conf").write_text("amqp://ops:secret@broker/")
    hostile = [
        running.message("a/x", baseUrl="sftp://evil@elsewhere/"),
        running.message("a/x", content={"encoding": "utf-8", "value": "pwned"}),
        running.message("a/x", fileOp={"hlink": str(secret / "credentials.conf")}),
    ]
    outside = running.message("a/x")
    outside["relPath"] = str(secret / "credentials.conf").lstrip("/")
    hostile.append(outside)
    result = work(running, *hostile)
    assert result.ok == [] and len(result.rejected) == 4
    assert os.listdir(running.destination) == []
    running.plugin.on_housekeeping()
    with open(running.state / "hpc_mirror_copier_02.json") as handle:
        counts = json.load(handle)
    assert counts["rejected"] == {"foreign_base_url": 1, "inline_content": 1, "path_outside_tree": 2}
    assert counts["updated"] >= counts["since"]


def test_copier_refuses_a_source_behind_a_link(running, tmp_path):
    secret = tmp_path / "home"
    secret.mkdir()
    (secret / "id_rsa").write_text("private key")
    os.symlink(str(secret), os.path.join(running.source, "evil"))
    result = work(running, running.message("evil/id_rsa"))
    assert result.ok == [] and result.failed == [] and len(result.rejected) == 1
    assert not os.path.exists(os.path.join(running.destination, "evil", "id_rsa"))
    assert running.plugin.rejected == {"symlinked_parent": 1}


def test_copier_retries_a_file_written_while_it_is_copied(running, monkeypatch):
    path = os.path.join(running.source, "growing")
    with open(path, "wb") as handle:
        handle.write(b"a" * 100000)
    real_copy = files.copy_data

    def copy_then_append(source_fd, target_fd):
        count = real_copy(source_fd, target_fd)
        with open(path, "ab") as handle:
            handle.write(b"more")
        return count
    monkeypatch.setattr(files, "copy_data", copy_then_append)
    result = work(running, running.message("growing"))
    assert result.ok == [] and len(result.failed) == 1
    assert not os.path.exists(os.path.join(running.destination, "growing"))
    assert leftovers(running.destination) == []
    monkeypatch.setattr(files, "copy_data", real_copy)
    result = work(running, running.message("growing"))
    assert len(result.ok) == 1


def test_copier_removes_its_leftover_at_start(running):
    os.makedirs(os.path.join(running.destination, "d"))
    leftover = os.path.join(running.destination, "d", ".hpc_mirror~00112233aabb")
    with open(leftover, "w") as handle:
        handle.write("partial")
    with open(running.state / "hpc_mirror_copier_02.inflight", "wb") as handle:
        handle.write(b"d/.hpc_mirror~00112233aabb")
    running.plugin.on_start()
    assert not os.path.exists(leftover)


# --------------------------------------------------------------------------
# the outage window: a conflict area on the recovering side
# --------------------------------------------------------------------------

def set_file(path, content, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(content)
    os.utime(path, (mtime, mtime))


def conflict_records(running):
    path = os.path.join(running.destination, ".hpc_mirror", "conflicts", "3", "conflicts.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture
def recovering(running):
    """The copier of a reverse direction, generation 3, outage window from 1 000 000 s."""
    options = running.plugin.o
    options.hpcMirrorConflictDir = os.path.join(running.destination, ".hpc_mirror", "conflicts", "3")
    options.hpcMirrorGeneration = "3"
    options.hpcMirrorConflictSince = 1_000_000.0
    running.plugin = copier.Copier(options)
    return running


def test_a_newer_file_on_the_recovering_side_is_kept_aside(recovering):
    set_file(os.path.join(recovering.source, "run", "f3"), "the other side's older copy", 900_000)
    set_file(os.path.join(recovering.destination, "run", "f3"), "the last write before the outage", 1_000_020)
    result = work(recovering, recovering.message("run/f3"))
    assert len(result.ok) == 1
    with open(os.path.join(recovering.destination, "run", "f3")) as handle:
        assert handle.read() == "the other side's older copy"
    [record] = conflict_records(recovering)
    assert record["path"] == "run/f3" and record["reason"].startswith("newer")
    assert record["recovering"] == {"mtime_ns": 1_000_020 * 10**9, "size": 32}
    assert record["incoming"]["mtime_ns"] == 900_000 * 10**9
    with open(os.path.join(recovering.destination, record["kept"])) as handle:
        assert handle.read() == "the last write before the outage"
    recovering.plugin.on_housekeeping()
    with open(os.path.join(str(recovering.state), "hpc_mirror_copier_02.json")) as handle:
        counts = json.load(handle)
    assert counts["conflicts_kept"] == 1 and counts["rejected"] == {}


def test_a_file_changed_in_the_window_is_kept_even_when_the_other_side_is_newer(recovering):
    set_file(os.path.join(recovering.source, "g"), "changed on the other side during the outage", 1_000_500)
    set_file(os.path.join(recovering.destination, "g"), "changed here just before the outage", 1_000_010)
    work(recovering, recovering.message("g"))
    [record] = conflict_records(recovering)
    assert record["reason"] == "changed in the outage window"
    # rewritten again in the same generation: what the copier wrote is not kept a second time
    set_file(os.path.join(recovering.source, "g"), "changed once more", 1_000_600)
    work(recovering, recovering.message("g"))
    assert len(conflict_records(recovering)) == 1
    with open(os.path.join(recovering.destination, "g")) as handle:
        assert handle.read() == "changed once more"


def test_an_old_file_is_simply_replaced(recovering):
    set_file(os.path.join(recovering.source, "old"), "newer", 1_000_100)
    set_file(os.path.join(recovering.destination, "old"), "older, before the window", 999_000)
    work(recovering, recovering.message("old"))
    assert conflict_records(recovering) == []


def test_a_removal_keeps_a_file_changed_in_the_window(recovering):
    set_file(os.path.join(recovering.destination, "late"), "written just before the outage", 1_000_001)
    set_file(os.path.join(recovering.destination, "early"), "written long before", 10)
    removals = [recovering.message("late", fileOp={"remove": ""}), recovering.message("early", fileOp={"remove": ""})]
    worklist = types.SimpleNamespace(incoming=list(removals), ok=[], failed=[], rejected=[])
    recovering.plugin.after_accept(worklist)
    # 'late' is kept aside; sr3 itself then removes what is left at both paths
    assert worklist.incoming == removals and worklist.failed == [] and worklist.rejected == []
    assert [r["path"] for r in conflict_records(recovering)] == ["late"]
    assert not os.path.exists(os.path.join(recovering.destination, "late"))
    assert os.path.exists(os.path.join(recovering.destination, "early"))


def test_a_removal_of_what_the_source_has_again_is_not_applied(running):
    set_file(os.path.join(running.source, "back"), "re-created since", 2_000_000)
    set_file(os.path.join(running.destination, "back"), "re-created since", 2_000_000)
    worklist = types.SimpleNamespace(incoming=[running.message("back", fileOp={"remove": ""})], ok=[], failed=[],
                                     rejected=[])
    running.plugin.after_accept(worklist)
    assert worklist.incoming == [] and len(worklist.rejected) == 1
    assert worklist.rejected[0]["report"]["code"] == 304


# --------------------------------------------------------------------------
# names as sr3c sends them: ' ' as %20, '#' as %23
# --------------------------------------------------------------------------

def sr3c_message(running, relative, **fields):
    message = running.message(relative.replace(" ", "%20").replace("#", "%23"), **fields)
    return message


def test_sr3c_spaces_and_hashes_are_decoded(running):
    running.plugin.o.hpcMirrorSr3cNames = True
    set_file(os.path.join(running.source, "run 1", "out #2.txt"), "data", 1_000_000)
    result = work(running, sr3c_message(running, "run 1/out #2.txt"))
    assert len(result.ok) == 1, result
    with open(os.path.join(running.destination, "run 1", "out #2.txt")) as handle:
        assert handle.read() == "data"


def test_sr3c_a_literal_percent_name_that_exists_is_kept(running):
    running.plugin.o.hpcMirrorSr3cNames = True
    set_file(os.path.join(running.source, "a%20b"), "literal", 1_000_000)
    result = work(running, running.message("a%20b"))
    assert len(result.ok) == 1
    assert os.listdir(running.destination) == ["a%20b"]


def test_sr3c_removal_of_a_name_with_a_space(running):
    running.plugin.o.hpcMirrorSr3cNames = True
    set_file(os.path.join(running.destination, "gone file"), "old", 1_000_000)
    worklist = types.SimpleNamespace(incoming=[sr3c_message(running, "gone file", fileOp={"remove": ""})], ok=[],
                                     failed=[], rejected=[])
    running.plugin.after_accept(worklist)
    [message] = worklist.incoming
    assert message["new_file"] == "gone file"


@pytest.mark.parametrize("path,text", [
    ("plain/name.txt", "plain/name.txt"), ("new\nline", "new\\x0aline"), ("tab\there", "tab\\x09here"),
    ("caf\udce9", "caf\\xe9"), (b"caf\xe9", "caf\\xe9"), ("日本 語", "日本 語"), (None, None),
])
def test_log_lines_show_any_name_on_one_line(path, text):
    assert copier.shown(path) == text


def test_tolerant_logging_writes_names_that_are_not_utf8(tmp_path):
    import logging
    log = tmp_path / "copier.log"
    handler = logging.FileHandler(str(log), encoding="utf-8")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        copier.tolerant_logging()
        logging.getLogger("sarracenia.flowcb.log").error("downloaded ok: %s", "caf\udce9")
        handler.flush()
    finally:
        root.removeHandler(handler)
        handler.close()
    assert "downloaded ok: caf\\udce9" in log.read_text()


@pytest.mark.parametrize("directory", ["$HOME", "${HOME}", "a$b", "${PATH}x"])
def test_a_directory_with_a_dollar_keeps_its_name(running, directory):
    """sr3 expands ${...} in the destination directory it computes: the copier uses relPath."""
    set_file(os.path.join(running.source, directory, "f"), "data", 1_000_000)
    result = work(running, running.message(directory + "/f"))
    assert len(result.ok) == 1, result.rejected
    with open(os.path.join(running.destination, directory, "f")) as handle:
        assert handle.read() == "data"


def test_a_link_event_makes_the_link_with_its_own_times(running):
    link = os.path.join(running.source, "d", "link")
    os.makedirs(os.path.dirname(link))
    os.symlink("../target with space", link)
    os.utime(link, ns=(1_000_000_000_000_000_001, 1_500_000_000_000_000_007), follow_symlinks=False)
    message = running.message("d/link", fileOp={"link": "../target with space"})
    result = work(running, message)
    assert len(result.ok) == 1 and "fileOp" not in message
    copy = os.path.join(running.destination, "d", "link")
    assert os.readlink(copy) == "../target with space"
    assert os.lstat(copy).st_mtime_ns == 1_500_000_000_000_000_007


def test_a_mkdir_of_a_directory_the_source_removed_is_not_applied(running):
    os.makedirs(os.path.join(running.source, "kept"))
    gone = running.message("gone", fileOp={"directory": ""})
    kept = running.message("kept", fileOp={"directory": ""})
    worklist = types.SimpleNamespace(incoming=[gone, kept], ok=[], failed=[], rejected=[])
    running.plugin.after_accept(worklist)
    assert worklist.incoming == [kept] and worklist.rejected == [gone]
    assert gone["report"]["code"] == 410


def test_prune_empty_directories_removes_only_empty_ones_deepest_first(tmp_path):
    top = tmp_path / "copy"
    deep = top / "gone" / "a\nb" / "caf\u00e9" / "d"
    deep.mkdir(parents=True)
    (top / "gone" / "kept").mkdir()
    (top / "gone" / "kept" / "file").write_text("x")
    outside = tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    os.symlink(str(outside), str(top / "gone" / "link"))
    removed = files.prune_empty_directories(str(top), "gone")
    assert removed == 3
    assert sorted(os.listdir(str(top / "gone"))) == ["kept", "link"]
    assert (outside / "empty").is_dir(), "a link was followed"
    assert files.prune_empty_directories(str(top), "missing") == 0
    assert files.prune_empty_directories(str(top), "gone/link") == 0


def test_a_directory_removal_first_removes_the_empty_directories_left_below(running):
    """rm -r: the parent's removal may come before its children's (other winnows); sr3's rmdir follows."""
    os.makedirs(os.path.join(running.destination, "tree", "l1 \u00e9", "l2\n", "l3"))
    os.makedirs(os.path.join(running.destination, "tree", "busy"))
    with open(os.path.join(running.destination, "tree", "busy", "f"), "w") as handle:
        handle.write("its own removal is still on its way")
    removals = [running.message(rel, fileOp={"remove": "", "directory": ""}) for rel in ("tree/l1 \u00e9", "tree")]
    worklist = types.SimpleNamespace(incoming=list(removals), ok=[], failed=[], rejected=[])
    running.plugin.after_accept(worklist)
    assert worklist.incoming == removals, "both removals go on to sr3"
    assert os.listdir(os.path.join(running.destination, "tree")) == ["busy"]
    assert os.path.isfile(os.path.join(running.destination, "tree", "busy", "f")), "a file was removed"


@pytest.mark.parametrize("text, expected", [
    ("20261207T191124.123456717", 1796670684123456717),
    ("20261207T191124", 1796670684000000000),
    ("20261207191124.5", 1796670684500000000),
    ("20261207T191124.1234567891", 1796670684123456789),
    ("yesterday", None), (None, None), ("20261207T1911", None),
])
def test_a_posted_time_is_read_to_the_nanosecond(text, expected):
    """sftp gives whole seconds: the copy's mtime comes from the message, read without a float."""
    assert copier.posted_ns(text) == expected

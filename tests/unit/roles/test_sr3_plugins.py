# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the sr3 flow callbacks the mirror role ships (roles/mirror/files/).

The plugins are loaded by path, as sr3 loads them from ~/.config/sr3/plugins,
and run against real sarracenia options and messages.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import importlib.util
import json
import os
import sys
import time
import types

import pytest

import sarracenia
import sarracenia.config
from sarracenia.flowcb import FlowCB

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FILES = os.path.join(ROOT, "roles", "mirror", "files")
# sr3 puts its plugin directory on sys.path: the plugins import each other by name.
if FILES not in sys.path:
    sys.path.insert(0, FILES)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(FILES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tally = _load("hpc_mirror_tally")
copier = _load("hpc_mirror_copier")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def message(**fields):
    """A real sarracenia.Message with the given fields."""
    msg = sarracenia.Message()
    msg.update(fields)
    return msg


class RecordingMessage(dict):
    """A message that records the report codes set on it."""

    def __init__(self, *args, **kwargs):
        super(RecordingMessage, self).__init__(*args, **kwargs)
        self.reports = []

    def setReport(self, code, text=None):
        self.reports.append((code, text))


def worklist(incoming=(), ok=(), failed=(), rejected=()):
    return types.SimpleNamespace(incoming=list(incoming), ok=list(ok), failed=list(failed),
                                 rejected=list(rejected))


@pytest.fixture
def options(tmp_path, monkeypatch):
    """Real sr3 options, isolated from the user's own sr3 configuration."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    o = sarracenia.config.default_config()
    state_dir = tmp_path / "cache" / "shovel" / "mirror_p2s_tally"
    state_dir.mkdir(parents=True)
    o.pid_filename = str(state_dir / "shovel_mirror_p2s_tally_01.pid")
    return o


def test_plugins_are_sr3_flow_callbacks(options):
    assert issubclass(tally.Tally, FlowCB)
    assert issubclass(copier.Copier, FlowCB)
    assert tally.timestr2flt is sarracenia.timestr2flt
    assert copier.Copier(options).o is options


# --------------------------------------------------------------------------
# tally: classify
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fields, counter", [
    ({"size": 10}, "files"),
    ({}, "files"),
    ({"fileOp": None, "size": 3}, "files"),
    ({"fileOp": {}}, "files"),
    ({"fileOp": {"remove": ""}}, "removes"),
    ({"fileOp": {"remove": "", "directory": ""}}, "removes"),  # rmdir
    ({"fileOp": {"link": "target"}}, "links"),
    ({"fileOp": {"link": "target", "rename": "old/name"}}, "links"),  # a link moved
    ({"fileOp": {"directory": ""}}, "directories"),  # mkdir
    ({"fileOp": {"rename": "old/name"}}, "renames"),
    ({"fileOp": {"rename": "old/name", "directory": ""}}, "directories"),
    # a renamed file that carries its content is a copied file
    ({"fileOp": {"rename": "old/name"}, "size": 5}, "files"),
])
def test_classify(fields, counter):
    assert tally.classify(message(**fields)) == counter
    assert counter in tally.COUNTERS


# --------------------------------------------------------------------------
# tally: Counts
# --------------------------------------------------------------------------

def test_counts_totals_interval_and_bytes():
    counts = tally.Counts()
    assert counts.totals == dict((name, 0) for name in tally.COUNTERS)
    now = time.time()
    counts.add(message(size=100), now=now)
    counts.add(message(size="50"), now=now)
    counts.add(message(fileOp={"rename": "a"}, size=7), now=now)
    counts.add(message(fileOp={"remove": ""}, size=999), now=now)  # removal bytes do not count
    counts.add(message(fileOp={"link": "x"}), now=now)
    counts.add(message(fileOp={"directory": ""}), now=now)
    counts.add(message(fileOp={"rename": "a"}), now=now)
    expected = {"files": 3, "bytes": 157, "links": 1, "renames": 1, "removes": 1, "directories": 1}
    assert counts.totals == expected
    assert counts.interval == expected
    assert counts.last_copy == now

    counts.reset_interval()
    assert counts.interval == dict((name, 0) for name in tally.COUNTERS)
    assert counts.totals == expected  # totals survive the interval
    counts.add(message(size=1), now=now + 1)
    assert counts.totals["files"] == 4 and counts.totals["bytes"] == 158
    assert counts.interval["files"] == 1 and counts.interval["bytes"] == 1
    assert counts.last_copy == now + 1


def test_counts_age_from_mtime():
    counts = tally.Counts()
    now = time.time()
    counts.add(message(size=1, mtime=sarracenia.timeflt2str(now - 10)), now=now)
    counts.add(message(size=1, mtime=sarracenia.timeflt2str(now - 30)), now=now)
    counts.add(message(size=1, mtime=sarracenia.timeflt2str(now + 60)), now=now)  # clock skew: age 0
    counts.add(message(size=1), now=now)  # no mtime: not part of the age
    counts.add(message(fileOp={"link": "x"}, mtime=sarracenia.timeflt2str(now - 1000)), now=now)
    assert counts.age_count == 3
    assert counts.age_max == pytest.approx(30, abs=0.01)
    report = counts.report()
    assert report["age_mean"] == pytest.approx(40 / 3.0, abs=0.01)
    assert report["age_max"] == pytest.approx(30, abs=0.01)
    counts.reset_interval()
    assert counts.report()["age_mean"] == 0.0 and counts.report()["age_max"] == 0.0


def test_counts_report_rates():
    counts = tally.Counts()
    for _attempt in range(20):
        counts.add(message(size=1000))
    counts.interval_start = time.time() - 10
    report = counts.report()
    assert set(report) == {"totals", "interval", "interval_seconds", "files_per_second",
                           "bytes_per_second", "age_mean", "age_max", "last_copy"}
    assert report["interval_seconds"] == pytest.approx(10, abs=1)
    assert report["files_per_second"] == pytest.approx(2.0, rel=0.1)
    assert report["bytes_per_second"] == pytest.approx(2000.0, rel=0.1)
    assert report["totals"]["files"] == 20 and report["interval"]["bytes"] == 20000
    # the report is a copy, not the live counters
    report["totals"]["files"] = 0
    assert counts.totals["files"] == 20
    # the metrics file sr3 writes is JSON
    json.dumps(report)


def test_counts_report_empty_interval():
    report = tally.Counts().report()
    assert report["files_per_second"] == 0 and report["age_mean"] == 0.0
    assert report["interval_seconds"] > 0


def test_counts_from_saved_totals():
    counts = tally.Counts({"files": 5, "bytes": 10, "last_copy": 123.5, "bogus": 7})
    assert counts.totals["files"] == 5 and counts.totals["bytes"] == 10
    assert counts.totals["links"] == 0
    assert "bogus" not in counts.totals
    assert counts.last_copy == 123.5
    assert counts.interval["files"] == 0


# --------------------------------------------------------------------------
# tally: the flow callback and its state file
# --------------------------------------------------------------------------

def test_tally_counts_persists_and_reloads(options):
    state_file = os.path.join(os.path.dirname(options.pid_filename), "hpc_mirror_tally.json")
    first = tally.Tally(options)
    assert first.state_file == state_file
    assert not os.path.exists(state_file)
    assert first.counts.totals["files"] == 0

    first.after_accept(worklist(incoming=[
        message(size=10, relPath="a/1"),
        message(size=20, relPath="a/2"),
        message(fileOp={"remove": ""}, relPath="a/3"),
    ]))
    first.after_accept(worklist(incoming=[message(fileOp={"directory": ""}, relPath="b")]))
    metrics = first.metricsReport()
    assert metrics["totals"]["files"] == 2 and metrics["totals"]["bytes"] == 30
    assert metrics["interval"]["removes"] == 1 and metrics["interval"]["directories"] == 1

    first.on_housekeeping()
    with open(state_file) as handle:
        saved = json.load(handle)
    assert saved == dict(files=2, bytes=30, links=0, renames=0, removes=1, directories=1,
                         last_copy=first.counts.last_copy)
    assert saved["last_copy"] > 0
    assert not os.path.exists(state_file + ".tmp")
    # housekeeping starts a new interval, totals go on
    assert first.counts.interval["files"] == 0
    assert first.counts.totals["files"] == 2

    # a restarted shovel carries on from the saved totals
    second = tally.Tally(options)
    assert second.counts.totals == first.counts.totals
    assert second.counts.last_copy == saved["last_copy"]
    assert second.counts.interval["files"] == 0
    second.after_accept(worklist(incoming=[message(size=5)]))
    second.on_stop()
    with open(state_file) as handle:
        assert json.load(handle)["bytes"] == 35
    assert tally.Tally(options).counts.totals["files"] == 3


def test_tally_only_counts_incoming(options):
    t = tally.Tally(options)
    t.after_accept(worklist(incoming=[message(size=1)], rejected=[message(size=100)],
                            failed=[message(size=100)], ok=[message(size=100)]))
    assert t.counts.totals["files"] == 1 and t.counts.totals["bytes"] == 1


def test_tally_ignores_a_corrupt_state_file(options):
    state_file = os.path.join(os.path.dirname(options.pid_filename), "hpc_mirror_tally.json")
    with open(state_file, "w") as handle:
        handle.write("{not json")
    t = tally.Tally(options)
    assert t.counts.totals == dict((name, 0) for name in tally.COUNTERS)
    t.on_housekeeping()
    with open(state_file) as handle:
        assert json.load(handle)["files"] == 0


# --------------------------------------------------------------------------
# copier: helpers
# --------------------------------------------------------------------------

def file_message(path, cls=RecordingMessage, **fields):
    """A message for a local file, as sr3 watch posts it (post_baseUrl file:/)."""
    msg = cls()
    msg.update({"baseUrl": "file:/", "relPath": path.lstrip("/")}, **fields)
    return msg


def test_local_source_path():
    assert copier.local_source_path({"baseUrl": "file:/", "relPath": "fs/a/x"}) == "/fs/a/x"
    assert copier.local_source_path({"baseUrl": "file:/", "relPath": "/fs/a/x"}) == "/fs/a/x"
    assert copier.local_source_path({"baseUrl": "file:///fs", "relPath": "a/x"}) == "/fs/a/x"
    assert copier.local_source_path({"baseUrl": "sftp://host/", "relPath": "fs/a/x"}) is None
    assert copier.local_source_path({"relPath": "fs/a/x"}) is None


def test_split_vanished(tmp_path):
    present = tmp_path / "present"
    present.write_text("data")
    dangling = tmp_path / "dangling"
    os.symlink(str(tmp_path / "nowhere"), str(dangling))

    gone = file_message(str(tmp_path / "gone"))
    exists = file_message(str(present))
    link = file_message(str(dangling))  # the link itself is there: a real failure
    removal = file_message(str(tmp_path / "removed"), fileOp={"remove": ""})
    rmdir = file_message(str(tmp_path / "removed_dir"), fileOp={"remove": "", "directory": ""})
    remote = RecordingMessage(baseUrl="sftp://host/", relPath=str(tmp_path / "gone").lstrip("/"))
    renamed_away = file_message(str(tmp_path / "old"), fileOp={"rename": "x"})

    still, vanished = copier.split_vanished([gone, exists, link, removal, rmdir, remote, renamed_away])
    assert vanished == [gone, renamed_away]
    assert still == [exists, link, removal, rmdir, remote]
    # order is kept and nothing is lost
    assert copier.split_vanished([]) == ([], [])


def test_split_busy_directory_removals(tmp_path):
    busy = tmp_path / "dest" / "busy"
    busy.mkdir(parents=True)
    (busy / "file").write_text("x")
    plain_file = tmp_path / "dest" / "plain"
    plain_file.write_text("x")
    link_to_dir = tmp_path / "dest" / "link"
    os.symlink(str(busy), str(link_to_dir))

    def removal(name, **extra):
        fields = {"fileOp": {"remove": "", "directory": ""},
                  "new_dir": str(tmp_path / "dest"), "new_file": name}
        fields.update(extra)
        return RecordingMessage(fields)

    busy_removal = removal("busy")
    gone_removal = removal("missing")
    file_removal = removal("plain")
    link_removal = removal("link")
    no_destination = RecordingMessage(fileOp={"remove": ""})
    not_a_removal = RecordingMessage(fileOp={"directory": ""}, new_dir=str(tmp_path / "dest"), new_file="busy")

    rejected, retry = copier.split_busy_directory_removals(
        [busy_removal, gone_removal, file_removal, link_removal, no_destination, not_a_removal])
    assert retry == [busy_removal]
    assert rejected == [gone_removal, file_removal, link_removal, no_destination, not_a_removal]

    # once the directory is empty and gone, the removal is no longer retried
    (busy / "file").unlink()
    busy.rmdir()
    assert copier.split_busy_directory_removals([busy_removal]) == ([busy_removal], [])


# --------------------------------------------------------------------------
# copier: the flow callback
# --------------------------------------------------------------------------

@pytest.fixture
def trees(options, tmp_path):
    """The copier's source and destination trees, as its config names them."""
    options.baseDir = str(tmp_path / "fs" / "primary")
    options.directory = str(tmp_path / "fs" / "secondary")
    options.hpcMirrorSourceUrl = "file:/"
    os.makedirs(options.baseDir)
    os.makedirs(options.directory)
    return options


def mirrored(options, rel_path, **fields):
    """A message about baseDir/rel_path, with the fields sr3 sets when it accepts one."""
    new_dir, new_file = os.path.split(os.path.join(options.directory, rel_path))
    return message(baseUrl="file:/", relPath=os.path.join(options.baseDir, rel_path).lstrip("/"),
                   new_dir=new_dir, new_file=new_file, **fields)


def test_copier_after_accept_drops_newname_from_removals_only(trees):
    dir_moved = mirrored(trees, "old/dir", fileOp={"remove": "", "directory": ""}, newname="new/dir")
    file_moved = mirrored(trees, "old/file", fileOp={"remove": ""}, newname="new/file")
    renamed = mirrored(trees, "new/file", fileOp={"rename": os.path.join(trees.directory, "old/file")},
                       newname="new/file")
    plain = mirrored(trees, "x", newname="y")
    removal_without = mirrored(trees, "z", fileOp={"remove": ""})
    work = worklist(incoming=[dir_moved, file_moved, renamed, plain, removal_without])

    copier.Copier(trees).after_accept(work)

    assert "newname" not in dir_moved and "newname" not in file_moved
    assert dir_moved["fileOp"] == {"remove": "", "directory": ""}
    assert renamed["newname"] == "new/file"
    assert plain["newname"] == "y"
    assert "newname" not in removal_without
    assert work.incoming == [dir_moved, file_moved, renamed, plain, removal_without]


@pytest.mark.parametrize("rel_path, top", [
    ("fs/primary", True), ("/fs/primary", True), ("fs/primary/", True), ("fs//primary", True),
    ("fs/primary/a", False), ("fs/primary2", False), ("fs", False), ("", False),
])
def test_is_tree_top(rel_path, top):
    assert copier.is_tree_top({"relPath": rel_path}, "/fs/primary") is top
    assert copier.is_tree_top({"relPath": rel_path}, "/fs/primary/") is top


def test_is_tree_top_without_a_base_dir():
    assert not copier.is_tree_top({"relPath": "fs/primary"}, None)
    assert not copier.is_tree_top({"relPath": ""}, "/")


def test_copier_after_accept_rejects_the_tree_top(trees):
    """sr3_cpost posts the top directory at every start: never copied nor removed."""
    top = trees.baseDir.lstrip("/")
    top_mkdir = message(fileOp={"directory": ""}, relPath=top, baseUrl="file:/")
    top_removal = message(fileOp={"remove": "", "directory": ""}, relPath="/" + top, baseUrl="file:/")
    os.makedirs(os.path.join(trees.baseDir, "run"))
    below = mirrored(trees, "run", fileOp={"directory": ""})
    work = worklist(incoming=[top_mkdir, below, top_removal])

    copier.Copier(trees).after_accept(work)

    assert work.incoming == [below]
    assert work.rejected == [top_mkdir, top_removal]
    assert top_mkdir["report"]["code"] == 304 and "top directory" in top_mkdir["report"]["message"]
    assert "report" not in below


def test_copier_after_work_moves_messages(options, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "still_here").write_text("x")
    dest = tmp_path / "dst"
    (dest / "busy").mkdir(parents=True)
    (dest / "busy" / "child").write_text("x")

    vanished = file_message(str(source / "gone"))
    failing = file_message(str(source / "still_here"))
    failed_removal = file_message(str(source / "removed"), fileOp={"remove": ""})
    busy_removal = RecordingMessage(fileOp={"remove": "", "directory": ""}, relPath="busy",
                                    new_dir=str(dest), new_file="busy")
    rejected = RecordingMessage(relPath="x.tmp", new_dir=str(dest), new_file="x.tmp")
    done = RecordingMessage(relPath="ok")
    work = worklist(ok=[done], failed=[vanished, failing, failed_removal], rejected=[busy_removal, rejected])

    copier.Copier(options).after_work(work)

    assert work.ok == [done]
    assert work.failed == [failing, failed_removal, busy_removal]
    assert work.rejected == [rejected, vanished]
    assert [code for code, _reason in vanished.reports] == [410]
    for msg in (failing, failed_removal, busy_removal, rejected, done):
        assert msg.reports == []


def test_copier_after_work_with_real_messages(options, tmp_path):
    """sarracenia.Message.setReport accepts the code the copier uses."""
    vanished = file_message(str(tmp_path / "gone"), cls=sarracenia.Message)
    work = worklist(failed=[vanished])
    copier.Copier(options).after_work(work)
    assert work.failed == [] and work.rejected == [vanished]
    assert vanished["report"]["code"] == 410
    assert "source gone" in vanished["report"]["message"]
    assert "report" in vanished["_deleteOnPost"]


def test_copier_after_work_nothing_to_do(options):
    work = worklist()
    copier.Copier(options).after_work(work)
    assert (work.failed, work.rejected, work.ok) == ([], [], [])


def test_remote_source():
    assert copier.remote_source({"baseUrl": "sftp://opsM@hpc1any/", "relPath": "fs/primary/a b"}) == (
        "sftp://opsM@hpc1any/", "/fs/primary/a b")
    assert copier.remote_source({"baseUrl": "sftp://opsM@hpc1any:2222/base", "relPath": "/x"}) == (
        "sftp://opsM@hpc1any:2222/", "/base/x")
    assert copier.remote_source({"baseUrl": "file:/", "relPath": "fs/a"}) is None


def test_split_vanished_only_on_a_definite_no():
    answers = {"gone": False, "there": True, "unknown": None}
    messages = [{"relPath": name, "baseUrl": "sftp://u@h/"} for name in answers]
    messages.append({"relPath": "gone", "baseUrl": "sftp://u@h/", "fileOp": {"remove": ""}})
    still, vanished = copier.split_vanished(messages, lambda m: answers[m["relPath"]])
    assert [m["relPath"] for m in vanished] == ["gone"]
    assert [m["relPath"] for m in still] == ["there", "unknown", "gone"]

# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of roles/mirror/files/hpc_mirror_pace.py (Hold and Pace).

Hold is run side by side with sr3's own MDelayLatest, whose semantics it keeps,
on the same messages at the same (simulated) times. Pace is called the way
sr3's Flow.gather calls it, with a real source of messages before it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import importlib.util
import os
import random
import sys
import threading
import time
import types
from collections import OrderedDict

import pytest

import sarracenia
import sarracenia.config
from sarracenia.flowcb import mdelaylatest
from sarracenia.flowcb.gather.file import File

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FILES = os.path.join(ROOT, "roles", "mirror", "files")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(FILES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pace = _load("hpc_mirror_pace")


@pytest.fixture
def options(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    o = sarracenia.config.default_config()
    o.mdelay = 30
    return o


def message(path, published, operation=None):
    msg = sarracenia.Message()
    msg.update(relPath=path, pubTime=sarracenia.timeflt2str(published))
    if operation:
        msg["fileOp"] = {operation: ""}
    return msg


def worklist(incoming):
    return types.SimpleNamespace(incoming=list(incoming), ok=[], rejected=[], failed=[], directories_ok=[])


def key(msg):
    return (msg["relPath"], msg["pubTime"], sorted(msg.get("fileOp", {})))


@pytest.mark.parametrize("seed", range(6))
def test_hold_passes_and_rejects_what_mdelaylatest_does(options, monkeypatch, seed):
    rng = random.Random(seed)
    clock = {"now": 1.7e9}
    monkeypatch.setattr(mdelaylatest, "nowflt", lambda: clock["now"])
    monkeypatch.setattr(pace.time, "time", lambda: clock["now"])
    ours, theirs = pace.Hold(options), mdelaylatest.MDelayLatest(options)
    published = clock["now"]
    seen = {"passed": 0, "rejected": 0, "operations": 0}
    for _batch in range(60):
        incoming = []
        for _event in range(rng.randint(0, 8)):
            published += rng.uniform(0, 2)
            operation = rng.choice([None, None, None, "rename", "remove", "link"])
            incoming.append(message("d/f%d" % rng.randint(0, 12), published, operation))
        clock["now"] = max(clock["now"], published) + rng.uniform(0, 10)
        a, b = worklist(incoming), worklist([m.copy() for m in incoming])
        ours.after_accept(a)
        theirs.after_accept(b)
        assert sorted(map(key, a.incoming)) == sorted(map(key, b.incoming))
        assert sorted(map(key, a.rejected)) == sorted(map(key, b.rejected))
        seen["passed"] += len(a.incoming)
        seen["rejected"] += len(a.rejected)
        seen["operations"] += sum(1 for m in a.incoming if "fileOp" in m)
        # an operation goes on before the newer event of the same path that replaced it
        for path in {m["relPath"] for m in a.incoming}:
            times = [m["pubTime"] for m in a.incoming if m["relPath"] == path]
            assert times == sorted(times)
    assert len(ours.messages) == len(theirs.ok_delay)
    assert all(count > 0 for count in seen.values()), seen


def test_hold_releases_everything_on_stop(options):
    hold = pace.Hold(options)
    work = worklist([message("a", time.time()), message("b", time.time())])
    hold.after_accept(work)
    assert work.incoming == [] and len(hold.messages) == 2
    assert pace.NEXT_DUE["time"] == pytest.approx(time.time() + 30, abs=2)
    hold.please_stop()
    work = worklist([])
    hold.after_accept(work)
    assert sorted(m["relPath"] for m in work.incoming) == ["a", "b"]
    assert pace.NEXT_DUE["time"] is None


def test_hold_is_linear(options):
    """20 000 held paths, then 20 000 more events: MDelayLatest's quadratic scan would take minutes."""
    hold = pace.Hold(options)
    now = time.time()
    start = time.process_time()
    hold.after_accept(worklist([message("p%d" % i, now) for i in range(20000)]))
    hold.after_accept(worklist([message("p%d" % i, now + 1) for i in range(20000)]))
    assert len(hold.messages) == 20000
    assert time.process_time() - start < 5


class Flow(object):
    """Calls its gathers as sr3 3.3.1's Flow.gather does: p(batch - so_far), in order."""

    def __init__(self, options, gathers):
        self.o = options
        self.plugins = {"gather": gathers}

    def gather(self):
        incoming = []
        for gather in self.plugins["gather"]:
            _keep_going, messages = gather(self.o.batch - len(incoming))
            incoming.extend(messages)
        return incoming


class Source(object):
    """A queue that receives a message at a given time."""

    def __init__(self, at):
        self.at = at
        self.calls = 0

    def gather(self, count):
        self.calls += 1
        if time.time() >= self.at:
            self.at = float("inf")
            return (True, [message("x", time.time())])
        return (True, [])


def test_pace_returns_as_soon_as_a_message_comes(options):
    options.paceInterval = 0.05
    source = Source(time.time() + 0.5)
    flow = Flow(options, [source.gather])
    flow.plugins["gather"].append(pace.Pace(options).gather)
    start = time.time()
    got = flow.gather()  # the source's own first call finds nothing; Pace waits for the message
    elapsed = time.time() - start
    assert 0.45 < elapsed < 0.7
    assert [m["relPath"] for m in got] == ["x"]
    assert 5 < source.calls < 30  # polled every <= 0.05 s, not in a busy loop


def test_pace_hands_over_what_it_gathered(options):
    options.paceInterval = 0.02
    source = Source(time.time() + 0.1)
    flow = Flow(options, [source.gather])
    flow.plugins["gather"].append(pace.Pace(options).gather)
    (got,) = flow.gather()
    assert got["relPath"] == "x"


def test_pace_does_not_wait_when_the_pass_has_messages(options):
    source = Source(0)
    flow = Flow(options, [source.gather])
    flow.plugins["gather"].append(pace.Pace(options).gather)
    start = time.time()
    assert len(flow.gather()) == 1
    assert time.time() - start < 0.05 and source.calls == 1


def test_pace_wakes_for_a_due_hold_and_for_stop(options):
    options.paceInterval = 0.05
    source = Source(float("inf"))
    paced = pace.Pace(options)
    flow = Flow(options, [source.gather, paced.gather])
    pace.NEXT_DUE["time"] = time.time() + 0.2
    start = time.time()
    assert flow.gather() == []
    assert 0.15 < time.time() - start < 0.4
    pace.NEXT_DUE["time"] = None
    options.paceBlockMax = 0.3
    start = time.time()
    assert flow.gather() == []
    assert 0.25 < time.time() - start < 0.6
    paced.please_stop()
    start = time.time()
    assert flow.gather() == []
    assert time.time() - start < 0.05


class Watch(object):
    """The parts of sr3's watch gather (gather.file.File) that hand events over, with its own code."""

    on_add = File.on_add
    wakeup = File.wakeup

    def __init__(self):
        self.new_events = OrderedDict()
        self.left_events = OrderedDict()

    def process_event(self, event, src, dst):
        return True, [src]


def test_guarded_watch_loses_no_event():
    watch = Watch()
    assert pace.guard_watch(watch)
    assert not pace.guard_watch(watch)  # once is enough
    count = 20000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        adder = threading.Thread(target=lambda: [watch.on_add("create", "/f%d" % i, None) for i in range(count)])
        adder.start()
        seen = []
        while adder.is_alive():
            seen.extend(watch.wakeup())
        adder.join()
        seen.extend(watch.wakeup())
    finally:
        sys.setswitchinterval(interval)
    assert len(seen) == count and len(set(seen)) == count


def test_guard_watch_leaves_other_gathers_alone():
    assert not pace.guard_watch(None)
    assert not pace.guard_watch(object())


def test_hold_hands_out_due_messages_through_gather(options, monkeypatch):
    """Released messages count as gathered (no sr3 back-off) and pass the hold's after_accept unchanged."""
    clock = {"now": 1.7e9}
    monkeypatch.setattr(pace.time, "time", lambda: clock["now"])
    hold = pace.Hold(options)
    hold.after_accept(worklist([message("a", clock["now"]), message("b", clock["now"] + 5)]))
    assert hold.gather(100) == (True, [])
    clock["now"] += 31
    keep_going, released = hold.gather(100)
    assert keep_going and [m["relPath"] for m in released] == ["a"]
    assert released[0][pace.RELEASED] and pace.RELEASED in released[0]["_deleteOnPost"]
    assert pace.NEXT_DUE["time"] == pytest.approx(1.7e9 + 35)
    work = worklist(released + [message("c", clock["now"])])
    hold.after_accept(work)
    assert [m["relPath"] for m in work.incoming] == ["a"]
    assert sorted(hold.messages.held) == ["b", "c"]
    clock["now"] += 10
    assert [m["relPath"] for m in hold.gather(1)[1]] == ["b"]  # at most what the batch has room for

# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit's repair plugin (playbooks/files/hpc_mirror_repair.py) against sr3's own
duplicate suppression: a repair post of an unchanged file must not be a duplicate of
the file's first event, as the winnows would otherwise drop it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import importlib.util
import os
import time
import types

import sarracenia
import sarracenia.config
from sarracenia.flowcb.nodupe.disk import Disk

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _load():
    path = os.path.join(ROOT, "playbooks", "files", "hpc_mirror_repair.py")
    spec = importlib.util.spec_from_file_location("hpc_mirror_repair", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


repair = _load()


def options(tmp_path):
    o = sarracenia.config.default_config()
    o.component = "winnow"
    o.config = "test"
    o.pid_filename = str(tmp_path / "winnow.pid")
    o.cfg_run_dir = str(tmp_path)
    o.nodupe_ttl = 60
    o.no = 1
    return o


def event(path, pub_time):
    """A file event as the flow posts it (integrity none: no identity, key from path, mtime, size)."""
    msg = sarracenia.Message()
    msg.update({"baseUrl": "file:/", "relPath": path.lstrip("/"), "pubTime": pub_time,
                "mtime": "20260101T000000", "size": 42, "_deleteOnPost": set()})
    return msg


def test_a_repair_post_is_not_a_duplicate_of_the_first_event(tmp_path):
    o = options(tmp_path)
    nodupe = Disk(o)
    nodupe.on_start()
    first = event("/src/a.dat", sarracenia.timeflt2str(time.time()))
    again = event("/src/a.dat", sarracenia.timeflt2str(time.time() + 1))
    # without the plugin the re-post of the unchanged file is a duplicate
    work = types.SimpleNamespace(incoming=[first, again], rejected=[], ok=[], failed=[])
    nodupe.after_accept(work)
    assert work.incoming == [first] and work.rejected == [again]
    # with it, each repair post passes, even twice in a row
    posts = [event("/src/a.dat", sarracenia.timeflt2str(time.time() + 2)),
             event("/src/a.dat", sarracenia.timeflt2str(time.time() + 3))]
    plugin = repair.Repair(o)
    plugin.after_accept(types.SimpleNamespace(incoming=posts, rejected=[], ok=[], failed=[]))
    assert posts[0]["nodupe_override"]["key"].startswith("repair,")
    assert nodupe.deriveKey(posts[0]) != nodupe.deriveKey(first)
    work = types.SimpleNamespace(incoming=list(posts), rejected=[], ok=[], failed=[])
    nodupe.after_accept(work)
    assert work.incoming == posts and work.rejected == []
    nodupe.on_stop()


def post_options(tmp_path, listing, monkeypatch):
    """Options of a repair posting config (sr3_post -c repair), parsed and finalized by sr3."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    config = tmp_path / ".config" / "sr3" / "post" / "repair.conf"
    config.parent.mkdir(parents=True)
    config.write_text("post_broker amqp://nobody@localhost\npost_exchange xs_test\npost_baseUrl file:/\n"
                      "post_baseDir /\nrecursive off\nintegrity none\nbatch 3\n"
                      "hpcMirrorRepairList %s\n" % listing)
    monkeypatch.setattr("sys.argv", ["sr3_post", "-c", "repair"])
    return sarracenia.config.one_config("post", "repair", "foreground", isPost=True)


def test_the_listed_paths_are_posted_as_they_are(tmp_path, monkeypatch):
    """sr3 post expands ${...} in the paths it is given: '9${%Y}x' was posted as '92026x'."""
    tree = tmp_path / "src"
    names = [b"9${%Y}x/f", b"$(date) d/f \xff", b"tab\there/new\nline", b"${HOME}"]
    for name in names:
        path = os.path.join(os.fsencode(str(tree)), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"data")
    os.symlink(b"f", os.path.join(os.fsencode(str(tree)), b"9${%Y}x/link"))
    listed = [os.path.join(os.fsencode(str(tree)), name) for name in names + [b"9${%Y}x/link", b"gone"]]
    listing = tmp_path / "repost.list"
    listing.write_bytes(b"\0".join(listed) + b"\0")
    o = post_options(tmp_path, listing, monkeypatch)
    plugin = repair.Repair(o)
    batches = []
    while True:
        _keep_going, messages = plugin.gather(3)
        if not messages and not plugin.pending:
            break
        batches.append(messages)
    # the path each message is about (relPath is set when sr3 publishes it)
    posted = [os.path.join(m["new_dir"], m["new_file"]) for batch in batches for m in batch]
    assert [len(batch) for batch in batches] == [3, 2]  # 6 listed, one gone
    assert posted == [os.fsdecode(path) for path in listed[:5]]
    assert [m for batch in batches for m in batch][4]["fileOp"]["link"] == "f"
    assert plugin.missing == 1
    assert plugin.gather(3) == (True, [])

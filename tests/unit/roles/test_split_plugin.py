# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of roles/mirror/files/hpc_mirror_split.py (Split).

The plugin is loaded by path, as sr3 loads it from ~/.config/sr3/plugins. The
messages are made by sr3 itself (sarracenia.Message.fromFileData) from real
files with hostile names, with the options sr3 parses from a real watch config;
the exchange is picked by sr3's own Moth.splitPick and the message is put by
sr3's own AMQP putNewMessage, on a channel that encodes the frame with the
AMQP library's serializer instead of sending it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import importlib.util
import json
import os
import random
import sys
import types

import amqp
import amqp.serialization
import pytest

import sarracenia
import sarracenia.config
import sarracenia.moth
import sarracenia.moth.amqp
from sarracenia.flowcb import FlowCB

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FILES = os.path.join(ROOT, "roles", "mirror", "files")
sys.path.insert(0, os.path.join(ROOT, "tests", "corpus"))
import hostile_names  # noqa: E402  pylint: disable=wrong-import-position


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(FILES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


split = _load("hpc_mirror_split")

SEED = hostile_names.seed_from()


def worklist(ok):
    return types.SimpleNamespace(incoming=[], ok=list(ok), failed=[], rejected=[])


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    return root


def watch_options(tmp_path, monkeypatch, tree, winnows):
    """The options sr3 parses from a watch config like the role's post.conf."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    config = home / ".config" / "sr3"
    (config / "watch").mkdir(parents=True)
    (config / "credentials.conf").write_text("amqp://ops:secret@localhost/\n")
    (config / "watch" / "mirror_post.conf").write_text(
        "post_broker amqp://ops:secret@localhost/\n"
        "post_exchange xs_ops_mirror_post\n"
        "post_exchangeSplit %d\n"
        "post_baseUrl file:\n"
        "path %s\n"
        "integrity none\n" % (winnows, tree))
    # one_config parses the command line too: give it sr3's own.
    monkeypatch.setattr(sys, "argv", ["sr3", "foreground", "watch/mirror_post"])
    return sarracenia.config.one_config("watch", "mirror_post", "foreground")


@pytest.fixture(params=[2, 3, 7])
def options(request, tmp_path, monkeypatch, tree):
    return watch_options(tmp_path, monkeypatch, tree, request.param)


def file_message(options, path):
    """The message sr3's watch makes of a file (path as bytes)."""
    name = os.fsdecode(path)
    msg = sarracenia.Message.fromFileData(name, options, os.lstat(name))
    assert msg is not None
    msg["publisher_index"] = 0
    return msg


def sr3_pick(options, msg):
    """The exchange index sr3 3.3.1 itself picks (raises on names that are not ASCII)."""
    moth = types.SimpleNamespace(o={"exchange": options.publishers[0]["exchange"]})
    return sarracenia.moth.Moth.splitPick(moth, msg)


def hostile_files(tree, seed=SEED):
    paths = []
    rng = random.Random(seed)
    for cls, name in hostile_names.names(rng):
        path = os.path.join(os.fsencode(str(tree)), name)
        with open(path, "wb") as fh:
            fh.write(b"x")
        paths.append((cls, path))
    return paths


def test_split_is_an_sr3_flow_callback(options):
    assert issubclass(split.Split, FlowCB)
    assert isinstance(split.Split(options), FlowCB)


def test_sr3_alone_cannot_pick_for_a_name_that_is_not_ascii(options, tree):
    """The bug Split works around (if sr3 fixes it, Split must still agree with it)."""
    path = os.path.join(os.fsencode(str(tree)), "café".encode("utf-8"))
    open(path, "wb").close()
    with pytest.raises(UnicodeEncodeError):
        sr3_pick(options, file_message(options, path))


def test_every_hostile_name_gets_an_exchange(options, tree):
    print("hostile names seed %d" % SEED)
    plugin = split.Split(options)
    count = len(options.publishers[0]["exchange"])
    for cls, path in hostile_files(tree):
        msg = file_message(options, path)
        plugin.after_work(worklist([msg]))
        rel = msg["relPath"].encode("utf-8", "surrogateescape")
        assert msg[split.OVERRIDE] == sum(rel), cls
        assert sr3_pick(options, msg) == sum(rel) % count, cls


def test_a_path_that_is_not_utf8_is_summed_as_its_bytes(options, tree):
    path = os.path.join(os.fsencode(str(tree)), b"caf\xe9 \xff\n")
    open(path, "wb").close()
    msg = file_message(options, path)
    split.Split(options).after_work(worklist([msg]))
    assert msg["relPath"].endswith("caf\udce9 \udcff\n")
    assert msg[split.OVERRIDE] == sum(os.fsencode(str(tree)).lstrip(b"/") + b"/caf\xe9 \xff\n")


def test_ascii_paths_keep_the_exchange_sr3_picks(options, tree):
    """Existing deployments keep their routing: for ASCII the index is sr3's own."""
    plugin = split.Split(options)
    rng = random.Random(SEED)
    for n in range(50):
        name = "".join(rng.choice("abcXYZ019 _-.%#*?[]'\"\\") for _unused in range(rng.randrange(1, 40)))
        path = os.path.join(os.fsencode(str(tree)), b"f%d_" % n + name.encode("ascii"))
        with open(path, "wb"):
            pass
        plain = file_message(options, path)
        expected = sr3_pick(options, plain)
        msg = file_message(options, path)
        plugin.after_work(worklist([msg]))
        assert sr3_pick(options, msg) == expected, name


def test_the_same_path_always_maps_to_the_same_exchange(tmp_path, monkeypatch, tree):
    options = watch_options(tmp_path, monkeypatch, tree, 5)
    paths = hostile_files(tree)
    picks = []
    for _unused in range(3):
        plugin = split.Split(options)  # a restarted watch too
        picks.append([])
        for _cls, path in paths:
            msg = file_message(options, path)
            plugin.after_work(worklist([msg]))
            picks[-1].append(sr3_pick(options, msg))
    assert picks[0] == picks[1] == picks[2]
    assert len(set(picks[0])) > 1, "every path on one exchange: the split spreads nothing"


def test_events_of_one_path_share_an_exchange(options, tree):
    """A removal or rename message of a path goes where its creation went."""
    path = os.path.join(os.fsencode(str(tree)), "données 日本.txt".encode("utf-8"))
    open(path, "wb").close()
    created = file_message(options, path)
    removed = sarracenia.Message()
    removed.update(relPath=created["relPath"], fileOp={"remove": ""})
    plugin = split.Split(options)
    plugin.after_work(worklist([created, removed]))
    assert sr3_pick(options, created) == sr3_pick(options, removed)


def test_retrieve_path_when_there_is_no_rel_path(options):
    msg = sarracenia.Message()
    msg.update(retrievePath="a/é")
    split.Split(options).after_work(worklist([msg]))
    assert msg[split.OVERRIDE] == sum("a/é".encode("utf-8"))


def test_a_message_without_path_is_logged_and_left_to_sr3(options, caplog):
    msg = sarracenia.Message()
    split.Split(options).after_work(worklist([msg]))
    assert split.OVERRIDE not in msg
    assert sr3_pick(options, msg) == 0
    assert "without relPath" in caplog.text


class EncodingChannel(object):
    """An AMQP channel that encodes the publish frame as the AMQP library does, and keeps it."""

    is_open = True

    def __init__(self):
        self.published = []

    def basic_publish(self, msg, exchange, routing_key, timeout=None):
        frame = amqp.serialization.dumps("Bssbb", (0, exchange, routing_key, False, False))
        properties = msg._serialize_properties()  # pylint: disable=protected-access
        body = msg.body.encode("utf-8") if isinstance(msg.body, str) else msg.body
        self.published.append((exchange, routing_key, json.loads(body), frame, properties))

    def tx_commit(self):
        pass


def put(options, msg):
    """sr3's own AMQP putNewMessage, on an EncodingChannel; returns (result, channel)."""
    # The options exactly as sr3's post callback (flowcb/post/message.py) gives them to its Moth;
    # only the connection is left out (AMQP.__init__ would connect).
    props = sarracenia.moth.default_options()
    props.update(options.dictify())
    props.update(options.publishers[0])
    props["publisher_index"] = 0
    moth = sarracenia.moth.amqp.AMQP.__new__(sarracenia.moth.amqp.AMQP)
    sarracenia.moth.Moth.__init__(moth, props, is_subscriber=False)
    moth.connection = types.SimpleNamespace(connected=True)
    moth.channel = EncodingChannel()
    moth.timeout = 10
    return moth.putNewMessage(msg), moth.channel


def test_the_override_is_not_published(options, tree):
    path = os.path.join(os.fsencode(str(tree)), "résumé #1 *.txt".encode("utf-8"))
    open(path, "wb").close()
    msg = file_message(options, path)
    split.Split(options).after_work(worklist([msg]))
    ok, channel = put(options, msg)
    assert ok
    exchange, _key, body, _props, _extra = channel.published[0]
    assert split.OVERRIDE not in body
    assert body["relPath"] == msg["relPath"]
    assert exchange == options.publishers[0]["exchange"][msg[split.OVERRIDE] % len(options.publishers[0]["exchange"])]


def test_sr3_puts_every_hostile_name(options, tree):
    """With Split, sr3's putNewMessage publishes every name, the exact bytes in the body."""
    plugin = split.Split(options)
    for cls, path in hostile_files(tree):
        msg = file_message(options, path)
        plugin.after_work(worklist([msg]))
        ok, channel = put(options, msg)
        assert ok, cls
        body = channel.published[0][2]
        assert body["relPath"].encode("utf-8", "surrogateescape") == os.path.relpath(path, b"/"), cls


def deep_path(tree, word, depth):
    rel = b"/".join([word] * depth)
    os.makedirs(os.path.join(os.fsencode(str(tree)), rel))
    path = os.path.join(os.fsencode(str(tree)), rel, b"f")
    open(path, "wb").close()
    return path


@pytest.mark.parametrize("word", ["日本語の長いディレクトリ名".encode("utf-8"), b"caf\xe9_latin1", b"d" * 200],
                         ids=["cjk", "not_utf8", "ascii"])
def test_a_routing_key_too_long_for_amqp_is_cut_to_whole_names(options, tree, word):
    path = deep_path(tree, word, 12)
    msg = file_message(options, path)
    split.Split(options).after_work(worklist([msg]))
    ok, channel = put(options, msg)
    assert ok
    _exchange, key, body, _props, _extra = channel.published[0]
    encoded = key.encode("utf-8", "surrogatepass")
    assert len(encoded) < 255 and len(key) < 255
    assert key.startswith("v03.")
    assert body["relPath"].encode("utf-8", "surrogateescape") == os.path.relpath(path, b"/")


def test_sr3_alone_fails_on_long_keys_of_names_that_are_not_ascii(options, tree):
    """What the topic guard works around, in sr3 3.3.1's putNewMessage (split index given)."""
    # Not UTF-8 and 255 characters or more: the strict UTF-8 truncation raises.
    msg = file_message(options, deep_path(tree, b"caf\xe9_latin1", 30))
    msg[split.OVERRIDE] = 0
    with pytest.raises(UnicodeEncodeError):
        put(options, msg)
    # Fewer than 255 characters but more than 255 bytes: the AMQP library refuses the key,
    # the post fails (and is retried, failing again, for as long as the retry queue keeps it).
    msg = file_message(options, deep_path(tree, "日本語の長いディレクトリ名".encode("utf-8"), 12))
    msg[split.OVERRIDE] = 0
    ok, channel = put(options, msg)
    assert not ok and not channel.published


def test_short_keys_are_left_as_sr3_derives_them(options, tree):
    path = os.path.join(os.fsencode(str(tree)), b"x\xe9")
    open(path, "wb").close()
    msg = file_message(options, path)
    split.Split(options).after_work(worklist([msg]))
    assert "topic" not in msg


def test_fitting_topic():
    assert split.fitting_topic(["v03", "a", "b"], 1) is None
    cut = split.fitting_topic(["v03"] + ["é" * 50] * 5, 1)
    assert cut == ["v03", "é" * 50, "é" * 50]
    assert len(split.key_bytes(cut)) < 255
    # A first directory that does not fit alone: the prefix only.
    assert split.fitting_topic(["v03", "x" * 300], 1) == ["v03"]


def test_a_broken_message_is_logged_not_raised(options, caplog):
    msg = sarracenia.Message()
    msg.update(relPath=12)  # not a str
    split.Split(options).after_work(worklist([msg]))
    assert "cannot route" in caplog.text


def nodupe_cache(options, tmp_path):
    """sr3's own nodupe disk cache, as a winnow runs it."""
    from sarracenia.flowcb.nodupe.disk import Disk
    options.nodupe_ttl = 300
    cache = Disk(options)
    cache.open(str(tmp_path / "recent_files_001.cache"))
    return cache


def test_sr3_nodupe_alone_fails_on_a_name_that_is_not_utf8(options, tree, tmp_path):
    """The winnow's nodupe (disk) raises on a name that is not UTF-8: the rest of its batch goes unchecked."""
    path = os.path.join(os.fsencode(str(tree)), b"caf\xe9")
    open(path, "wb").close()
    cache = nodupe_cache(options, tmp_path)
    with pytest.raises(UnicodeEncodeError):
        cache.after_accept(types.SimpleNamespace(incoming=[file_message(options, path)], rejected=[], failed=[]))


def test_nodupe_takes_every_name_and_still_drops_duplicates(options, tree, tmp_path):
    paths = hostile_files(tree)
    links = [(b"link \xff", b"target \xe9\n"), ("lien é".encode("utf-8"), b"plain")]
    for name, target in links:
        os.symlink(target, os.path.join(os.fsencode(str(tree)), name))
        paths.append(("symlink", os.path.join(os.fsencode(str(tree)), name)))
    cache = nodupe_cache(options, tmp_path)
    plugin = split.Split(options)

    def batch():
        msgs = [file_message(options, path) for _cls, path in paths]
        plugin.after_work(worklist(msgs))
        work = types.SimpleNamespace(incoming=msgs, rejected=[], failed=[])
        cache.after_accept(work)
        return work

    first = batch()
    assert len(first.incoming) == len(paths) and not first.rejected
    second = batch()  # the same events again: every one is a duplicate
    assert not second.incoming and len(second.rejected) == len(paths)
    cache.save()
    with open(cache.cache_file, encoding="utf-8") as fh:  # strict: as sr3 reloads it
        assert fh.read()
    nodupe_cache(options, tmp_path)  # a restarted winnow reloads it


def test_nodupe_override_only_where_needed(options, tree):
    plain = os.path.join(os.fsencode(str(tree)), "é plain".encode("utf-8"))
    latin = os.path.join(os.fsencode(str(tree)), b"\xe9 latin")
    newline = os.path.join(os.fsencode(str(tree)), b"new\nline")
    for path in (plain, latin, newline):
        open(path, "wb").close()
    msgs = [file_message(options, path) for path in (plain, latin, newline)]
    split.Split(options).after_work(worklist(msgs))
    assert "nodupe_override" not in msgs[0]
    assert msgs[1]["nodupe_override"]["path"].endswith("/%E9%20latin")
    assert msgs[2]["nodupe_override"]["path"].endswith("/new%0Aline")
    # the key keeps nodupe's own shape (path, mtime, size), encoded
    assert msgs[1]["nodupe_override"]["key"].startswith(msgs[1]["nodupe_override"]["path"] + ",")
    # a repair's own key (hpc_mirror_repair) is kept, encoded
    msg = file_message(options, latin)
    msg["nodupe_override"] = {"key": "repair,t," + msg["relPath"]}
    split.Split(options).after_work(worklist([msg]))
    assert msg["nodupe_override"]["key"].startswith("repair,t,") and "%E9" in msg["nodupe_override"]["key"]


def receive(options, published):
    """The message a winnow gets from what the watch published, decoded by sr3's own import."""
    from sarracenia.postformat import PostFormat
    exchange, key, body, _props, _extra = published
    props = sarracenia.moth.default_options()
    props.update(options.dictify())
    props["topicPrefix"] = ["v03"]
    msg = PostFormat.importAny(json.dumps(body), {}, "application/json", props)
    msg["exchange"] = exchange
    msg.deriveTopics(props, key.replace("%23", "#").replace("%22", "*"))
    msg["_deleteOnPost"] |= set(["exchange", "local_offset", "subtopic"])
    msg["publisher_index"] = 0
    return msg


@pytest.mark.parametrize("word", ["日本語の長いディレクトリ名".encode("utf-8"), b"caf\xe9_latin1"], ids=["cjk", "not_utf8"])
def test_a_winnow_posts_again_what_the_watch_posted(options, tree, word):
    """sr3 derives the key again from the path when it re-posts: the winnow needs Split too."""
    path = deep_path(tree, word, 30)
    msg = file_message(options, path)
    split.Split(options).after_work(worklist([msg]))
    ok, channel = put(options, msg)
    assert ok
    winnow = receive(options, channel.published[0])
    assert winnow["relPath"] == msg["relPath"]
    # without Split, sr3 cannot post it again
    bare = receive(options, channel.published[0])
    try:
        bare_ok = put(options, bare)[0]
    except UnicodeError:
        bare_ok = False
    assert not bare_ok
    split.Split(options).after_work(worklist([winnow]))
    ok, again = put(options, winnow)
    assert ok
    _exchange, key, body, _props, _extra = again.published[0]
    assert len(key.encode("utf-8", "surrogatepass")) < 255
    assert body["relPath"].encode("utf-8", "surrogateescape") == os.path.relpath(path, b"/")

# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of tests/corpus/hostile_names.py: the generator of hostile names and corpus
trees, and the byte-exact tree comparison, on real files."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import random
import shutil
import stat
import time
import sys
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "corpus"))
import hostile_names  # noqa: E402  pylint: disable=wrong-import-position

SEED = hostile_names.seed_from()


def test_seed_from_argument_environment_or_fresh(monkeypatch):
    monkeypatch.setenv(hostile_names.SEED_ENV, "42")
    assert hostile_names.seed_from() == 42
    assert hostile_names.seed_from(7) == 7
    monkeypatch.delenv(hostile_names.SEED_ENV)
    fresh = {hostile_names.seed_from() for _unused in range(5)}
    assert len(fresh) > 1 and all(isinstance(seed, int) and seed > 0 for seed in fresh)


def test_names_are_reproducible_and_vary_with_the_seed():
    print("seed %d" % SEED)
    assert hostile_names.names(random.Random(SEED)) == hostile_names.names(random.Random(SEED))
    assert hostile_names.names(random.Random(SEED)) != hostile_names.names(random.Random(SEED + 1))


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_every_name_is_one_posix_allows_and_every_class_is_there(seed):
    generated = hostile_names.names(random.Random(seed))
    classes = {cls for cls, _name in generated}
    assert set(hostile_names.NAME_CLASSES) <= classes
    assert any(cls.startswith("combo:") for cls in classes)
    names = [name for _cls, name in generated]
    assert len(names) == len(set(names))
    for name in names:
        assert isinstance(name, bytes) and 0 < len(name) <= hostile_names.NAME_MAX
        assert b"/" not in name and b"\0" not in name and name not in (b".", b"..")
        assert not name.endswith(hostile_names.REJECTED_SUFFIXES)
    by_class = {}
    for cls, name in generated:
        by_class.setdefault(cls, []).append(name)
    assert len(by_class["name_max"][0]) == hostile_names.NAME_MAX
    with pytest.raises(UnicodeDecodeError):
        by_class["latin1_not_utf8"][0].decode("utf-8")
    nfc, nfd = by_class["nfc_nfd"]
    assert nfc != nfd and unicodedata.normalize("NFC", nfd.decode()) == nfc.decode()
    assert b"\n" in by_class["newline"][0] and by_class["leading_dash"][0].startswith(b"-")


def test_near_path_max_fills_its_budget():
    rng = random.Random(SEED)
    for budget in (300, 1000, 3900):
        path = hostile_names.near_path_max(rng, budget)
        assert budget - 16 <= len(path) <= budget
        assert all(0 < len(part) <= hostile_names.NAME_MAX for part in path.split(b"/"))


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "source"
    root.mkdir()
    made = hostile_names.write_corpus(str(root), SEED)
    return root, made


def test_write_corpus_writes_every_kind_of_entry(corpus):
    root, made = corpus
    base = os.fsencode(str(root))
    kinds = {cls.split(":")[0] for cls in made.entries.values()}
    for kind in ("big_space", "big", "empty_dir", "hardlink", "deep_tree", "near_path_max", "symlink_dangling",
                 "symlink_to_dir", "symlink_target_not_utf8", "in_dir"):
        assert kind in kinds, kind
    for rel, cls in made.entries.items():
        path = os.path.join(base, rel)
        assert os.path.lexists(path), rel
        st = os.lstat(path)
        if cls.startswith("symlink"):
            assert stat.S_ISLNK(st.st_mode)
        elif cls.startswith("empty_dir"):
            assert stat.S_ISDIR(st.st_mode) and os.listdir(path) == []
        elif cls.startswith("hardlink"):
            assert st.st_nlink == 2
        elif cls == "big_space":
            assert b" " in rel and st.st_size > 1024 * 1024
        elif cls == "near_path_max":
            assert len(path) >= hostile_names.PATH_MAX - 1 - 64 - 16 - 1
            assert len(path) < hostile_names.PATH_MAX
    deep = [rel for rel, cls in made.entries.items() if cls == "deep_tree"][0]
    assert deep.count(b"/") > 20
    assert len(made.entries) > 80


def test_the_same_seed_writes_the_same_tree(tmp_path, corpus):
    root, made = corpus
    other = tmp_path / "again_"  # a root of the same length: the same path budget
    other.mkdir()
    again = hostile_names.write_corpus(str(other), SEED)
    assert again.entries == made.entries
    assert hostile_names.compare_trees(str(root), str(other), mtime=False) == []


def test_a_corpus_saves_and_loads(tmp_path, corpus):
    _root, made = corpus
    made.save(str(tmp_path / "corpus.json"))
    loaded = hostile_names.Corpus.load(str(tmp_path / "corpus.json"))
    assert loaded.seed == made.seed and loaded.entries == made.entries


def test_a_copy_that_keeps_everything_compares_equal(tmp_path, corpus):
    root, _made = corpus
    copy = tmp_path / "copy"
    shutil.copytree(str(root), str(copy), symlinks=True)
    # copytree keeps file mtimes, not those of symlinks: set them as a faithful mirror would
    for dirpath, dirnames, filenames in os.walk(os.fsencode(str(root))):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                st = os.lstat(path)
                twin = os.path.join(os.fsencode(str(copy)), os.path.relpath(path, os.fsencode(str(root))))
                os.utime(twin, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    assert hostile_names.compare_trees(str(root), str(copy)) == []


def entries(root):
    return {os.path.relpath(os.path.join(d, n), root): None
            for d, ds, fs in os.walk(root) for n in ds + fs}


def test_every_difference_is_found_and_named(tmp_path):
    src, dst = os.fsencode(str(tmp_path / "a")), os.fsencode(str(tmp_path / "b"))
    os.mkdir(src)

    def write(root, name, data, mode=0o644, mtime=1000000000):
        path = os.path.join(root, name)
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))

    for name in (b"caf\xe9", "é nfc".encode(), unicodedata.normalize("NFD", "é nfc").encode(), b"same",
                 b"size", b"content", b"mode", b"mtime", b"type", b"new\nline"):
        write(src, name, b"data")
    os.symlink(b"target \xff", os.path.join(src, b"link"))
    shutil.copytree(src, dst, symlinks=True)
    os.utime(os.path.join(dst, b"link"), ns=(0, os.lstat(os.path.join(src, b"link")).st_mtime_ns),
             follow_symlinks=False)
    assert hostile_names.compare_trees(src, dst) == []
    os.unlink(os.path.join(dst, b"caf\xe9"))
    write(dst, b"caf\xc3\xa9", b"data")  # the same name in UTF-8 is another name
    os.unlink(os.path.join(dst, unicodedata.normalize("NFD", "é nfc").encode()))
    write(dst, b"size", b"longer")
    write(dst, b"content", b"DATA")
    os.chmod(os.path.join(dst, b"mode"), 0o600)
    os.utime(os.path.join(dst, b"mtime"), (1000000001, 1000000001))
    os.unlink(os.path.join(dst, b"type"))
    os.mkdir(os.path.join(dst, b"type"))
    os.unlink(os.path.join(dst, b"link"))
    os.symlink(b"target \xfe", os.path.join(dst, b"link"))
    diffs = hostile_names.compare_trees(src, dst, detail=True)
    found = sorted((category, rel) for category, rel, _detail in diffs)
    assert found == sorted([
        ("missing", b"caf\xe9"), ("extra", b"caf\xc3\xa9"),
        ("missing", unicodedata.normalize("NFD", "é nfc").encode()),
        ("size", b"size"), ("content", b"content"), ("mode", b"mode"), ("mtime", b"mtime"),
        ("type", b"type"), ("symlink_target", b"link"), ("symlink_mtime", b"link")])
    lines = hostile_names.compare_trees(src, dst)
    assert "missing in copy: 'caf\\xe9'" in lines
    assert any(line.startswith("symlink target: 'link' -> 'target \\xff'") for line in lines)
    assert hostile_names.compare_trees(src, dst, mtime=False, modes=False, detail=True) != []
    assert ("mtime", b"mtime") not in [(c, r) for c, r, _detail in
                                       hostile_names.compare_trees(src, dst, mtime_tolerance=2, detail=True)]
    assert hostile_names.compare_trees(src, dst, under=b"nowhere") == ["missing in copy: the whole subtree 'nowhere'"]


def test_the_command_line(tmp_path, capsys):
    assert hostile_names.main(["names", "--seed", "3"]) == 0
    assert "latin1_not_utf8" in capsys.readouterr().out
    root = tmp_path / "w"
    root.mkdir()
    assert hostile_names.main(["write", str(root), "--seed", "3", "--manifest", str(tmp_path / "m.json")]) == 0
    assert "seed 3" in capsys.readouterr().err
    assert hostile_names.Corpus.load(str(tmp_path / "m.json")).seed == 3
    assert hostile_names.main(["compare", str(root), str(root)]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert hostile_names.main(["compare", str(root), str(empty)]) == 1


def test_near_path_max_never_makes_a_name_over_name_max():
    """Seed 217207112 once made a 263-byte file name (ENAMETOOLONG in molecule)."""
    for seed in list(range(300)) + [217207112]:
        rng = random.Random(seed)
        for budget in (3900, 3950, 4000 - rng.randrange(0, 300)):
            path = hostile_names.near_path_max(rng, budget)
            assert max(len(part) for part in path.split(b"/")) <= hostile_names.NAME_MAX, (seed, budget)
            assert budget - 16 <= len(path) <= budget + 1, (seed, budget, len(path))


def test_wait_for_copy_ends_at_once_when_equal_and_when_the_differences_stay(tmp_path):
    source, copy = tmp_path / "s", tmp_path / "c"
    (source / "top").mkdir(parents=True)
    (copy / "top").mkdir(parents=True)
    (source / "top" / "caf\u00e9").write_bytes(b"x")
    os.utime(source / "top" / "caf\u00e9", (1, 1))
    shutil.copy2(str(source / "top" / "caf\u00e9"), str(copy / "top" / "caf\u00e9"))
    assert hostile_names.wait_for_copy(str(source), str(copy), b"top", timeout=30, quiet=0) == []
    (source / "top" / "lost").write_bytes(b"y")
    started = time.time()
    diffs = hostile_names.wait_for_copy(str(source), str(copy), b"top", timeout=30, quiet=0, interval=0.1, stable=0.5)
    assert [(category, rel) for category, rel, _line in diffs] == [("missing", b"lost")]
    assert time.time() - started < 10
    started = time.time()
    assert len(hostile_names.wait_for_copy(str(source), str(copy), b"top", timeout=0.3, quiet=0, interval=0.1)) == 1
    assert time.time() - started < 10


def test_class_of_and_reported_under(tmp_path):
    corpus = hostile_names.Corpus(1)
    corpus.add(b"hostile_1", "dir")
    corpus.add(b"hostile_1/a\nb.d", "dir:newline")
    assert hostile_names.class_of(corpus, b"hostile_1/a\nb.d/inner") == "dir:newline"
    assert hostile_names.class_of(corpus, b"hostile_1/other") == "dir"
    assert hostile_names.class_of(corpus, b"elsewhere") == "?"
    report = tmp_path / "report.jsonl"
    report.write_text('{"path": "hostile_1/x", "category": "missing"}\n'
                      '{"path": "hostile_10/y", "category": "extra"}\n'
                      '{"path": "hostile_1", "category": "mode"}\n')
    expected = [("hostile_1", "mode"), ("hostile_1/x", "missing")]
    assert hostile_names.reported_under(str(report), b"hostile_1") == expected


def test_staged_script_is_a_runnable_copy_in_a_directory_of_its_own():
    import pwd
    owner = pwd.getpwuid(os.getuid()).pw_name
    work, script, manifest = hostile_names.staged_script(owner)
    try:
        assert os.path.dirname(script) == work == os.path.dirname(manifest)
        assert stat.S_IMODE(os.stat(work).st_mode) == 0o755 and os.stat(work).st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(script).st_mode) == 0o644
        with open(script, "rb") as copy, open(hostile_names.__file__, "rb") as original:
            assert copy.read() == original.read()
        assert not os.path.exists(manifest)
        other = hostile_names.staged_script(owner)[0]
        shutil.rmtree(other)
        assert other != work
    finally:
        shutil.rmtree(work)

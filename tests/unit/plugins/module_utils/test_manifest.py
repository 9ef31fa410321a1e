# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the manifest module_utils on real temporary trees."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os
import shutil
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils import manifest
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import (
    ALL_CHECKS,
    ManifestError,
    ManifestReader,
    compare_manifests,
    path_key,
    write_manifest,
)


def make_tree(root):
    (root / 'dir' / 'sub').mkdir(parents=True)
    (root / 'dir' / 'a.txt').write_bytes(b'alpha')
    (root / 'dir' / 'sub' / 'empty').write_bytes(b'')
    (root / 'top.bin').write_bytes(b'0123456789')
    os.symlink('dir/a.txt', str(root / 'link'))
    return root


def clone(src, dst):
    # copy2 + copystat keep content, mode and mtime: an exact mirror.
    shutil.copytree(str(src), str(dst), symlinks=True)
    return dst


@pytest.fixture
def trees(tmp_path):
    src = make_tree(tmp_path / 'src')
    return src, clone(src, tmp_path / 'dst')


def entries(path):
    with ManifestReader(str(path)) as reader:
        return [entry for _key, entry in reader]


def entries_of(tmp_path, root, **kwargs):
    write_manifest(str(root), str(tmp_path / 'm'), **kwargs)
    return entries(tmp_path / 'm')


def audit(tmp_path, src, dst, mode='content', hash_name='blake2b', **kwargs):
    write_manifest(str(src), str(tmp_path / 'src.manifest'), mode, hash_name)
    write_manifest(str(dst), str(tmp_path / 'dst.manifest'), mode, hash_name)
    return compare_manifests(str(tmp_path / 'src.manifest'), str(tmp_path / 'dst.manifest'), **kwargs)


def nonzero(counts):
    return dict((k, v) for k, v in counts.items() if v)


def keep_mtime(path, change):
    st = os.stat(str(path))
    change(path)
    os.utime(str(path), ns=(st.st_atime_ns, st.st_mtime_ns))


# ---------------------------------------------------------------- writing

def test_manifest_content(tmp_path):
    src = make_tree(tmp_path / 'src')
    stats = write_manifest(str(src), str(tmp_path / 'm'), hash_name='blake2b')
    assert stats == {'entries': 6, 'counts': {'file': 3, 'dir': 2, 'symlink': 1, 'other': 0}, 'errors': 0,
                     'bytes': 15, 'hashed_files': 3, 'hashed_bytes': 15}
    lines = (tmp_path / 'm').read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header['manifest'] == 2 and header['root'] == str(src) and header['hash'] == 'blake2b'
    assert header['mode'] == 'content' and abs(header['started'] - time.time()) < 60
    got = dict((e['path'], e) for e in entries(tmp_path / 'm'))
    assert sorted(got) == ['dir', 'dir/a.txt', 'dir/sub', 'dir/sub/empty', 'link', 'top.bin']
    assert got['dir/a.txt']['hash'] == hashlib.blake2b(b'alpha').hexdigest()
    assert got['dir/a.txt']['size'] == 5
    assert got['dir/a.txt']['mode'] == os.stat(str(src / 'dir' / 'a.txt')).st_mode & 0o7777
    assert got['dir/a.txt']['mtime'] == os.stat(str(src / 'dir' / 'a.txt')).st_mtime
    assert got['dir/a.txt']['ctime'] == os.stat(str(src / 'dir' / 'a.txt')).st_ctime
    assert got['link']['type'] == 'symlink' and got['link']['target'] == 'dir/a.txt'
    assert 'hash' not in got['dir'] and 'hash' not in got['link']


def test_manifest_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_manifest(str(make_tree(tmp_path / 'src')), str(tmp_path / 'm'))
    finally:
        os.umask(old)
    assert os.stat(str(tmp_path / 'm')).st_mode & 0o777 == 0o640


@pytest.mark.parametrize('name', ['md5', 'sha256'])
def test_other_hash_algorithms(tmp_path, name):
    src = make_tree(tmp_path / 'src')
    write_manifest(str(src), str(tmp_path / 'm'), hash_name=name)
    got = dict((e['path'], e) for e in entries(tmp_path / 'm'))
    assert got['top.bin']['hash'] == hashlib.new(name, b'0123456789').hexdigest()


def test_metadata_mode_reads_no_content(tmp_path):
    src = make_tree(tmp_path / 'src')
    os.chmod(str(src / 'top.bin'), 0)  # would fail to open without root; never opened at all
    stats = write_manifest(str(src), str(tmp_path / 'm'), 'metadata')
    assert not any('hash' in e for e in entries(tmp_path / 'm'))
    assert stats['hashed_files'] == 0 and stats['errors'] == 0
    assert ManifestReader(str(tmp_path / 'm')).header['hash'] == 'none'


@pytest.mark.parametrize('mode, name', [('content', 'crc32'), ('fast', 'blake2b')])
def test_unknown_hash_or_mode_rejected(tmp_path, mode, name):
    with pytest.raises(ValueError):
        write_manifest(str(make_tree(tmp_path / 'src')), str(tmp_path / 'm'), mode, name)
    assert os.listdir(str(tmp_path)) == ['src']


def test_symlinked_dir_not_followed(tmp_path):
    src = make_tree(tmp_path / 'src')
    os.symlink(str(src / 'dir'), str(src / 'dirlink'))
    paths = [e['path'] for e in entries_of(tmp_path, src)]
    assert 'dirlink' in paths and not any(p.startswith('dirlink/') for p in paths)


def test_excludes_skip_files_and_subtrees(tmp_path):
    src = make_tree(tmp_path / 'src')
    (src / 'x.tmp').write_bytes(b'partial')
    paths = [e['path'] for e in entries_of(tmp_path, src, exclude=[r'\.tmp$', '^dir/sub$'])]
    assert paths == ['dir', 'dir/a.txt', 'link', 'top.bin']


def test_awkward_names_round_trip(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    names = [b'with space', b'new\nline', b'\xff\xfe latin1 \xe9', b'tab\tquote"back\\slash', 'ünïcödé'.encode('utf-8')]
    for name in names:
        with open(os.path.join(os.fsencode(str(src)), name), 'wb') as fh:
            fh.write(name)
    os.symlink(b'\xff target', os.path.join(os.fsencode(str(src)), b'\xfe link'))
    got = entries_of(tmp_path, src, hash_name='blake2b')
    manifest_text = (tmp_path / 'm').read_bytes()
    assert len(manifest_text.splitlines()) == len(names) + 2  # one line per entry, plus header
    assert [path_key(e['path']) for e in got] == sorted(names + [b'\xfe link'])
    files = [e for e in got if e['type'] == 'file']
    assert all(e['hash'] == hashlib.blake2b(path_key(e['path'])).hexdigest() for e in files)
    link = [e for e in got if e['type'] == 'symlink'][0]
    assert path_key(link['target']) == b'\xff target'


def test_chunked_sort_matches_in_memory(tmp_path):
    src = make_tree(tmp_path / 'src')
    for i in range(30):
        (src / 'dir' / ('f%02d' % (29 - i))).write_bytes(b'x' * i)
    write_manifest(str(src), str(tmp_path / 'memory'))
    write_manifest(str(src), str(tmp_path / 'chunks'), chunk_size=4)
    memory = (tmp_path / 'memory').read_bytes().splitlines()[1:]
    chunks = (tmp_path / 'chunks').read_bytes().splitlines()[1:]
    assert chunks == memory and len(memory) == 36
    keys = [path_key(json.loads(line)['path']) for line in memory]
    assert keys == sorted(keys)
    # No temporary chunk or partial manifest left next to dest.
    assert sorted(os.listdir(str(tmp_path))) == ['chunks', 'memory', 'src']


def test_many_hash_batches_same_as_one(tmp_path, monkeypatch):
    src = make_tree(tmp_path / 'src')
    for i in range(40):
        (src / ('f%02d' % i)).write_bytes(b'y' * i)
    write_manifest(str(src), str(tmp_path / 'one'), workers=1)
    monkeypatch.setattr(manifest, '_BATCH_FILES', 3)  # many tasks, several in flight
    write_manifest(str(src), str(tmp_path / 'many'), workers=3)
    one = (tmp_path / 'one').read_bytes().splitlines()[1:]
    assert one == (tmp_path / 'many').read_bytes().splitlines()[1:]
    assert sum(1 for line in one if b'"hash"' in line) == 43


def test_fifo_is_other_and_never_opened(tmp_path):
    src = make_tree(tmp_path / 'src')
    os.mkfifo(str(src / 'pipe'))  # opening it for hashing would block forever
    got = dict((e['path'], e) for e in entries_of(tmp_path, src))
    assert got['pipe']['type'] == 'other' and 'hash' not in got['pipe'] and 'error' not in got['pipe']


def test_file_replaced_by_fifo_during_scan(tmp_path):
    # A live tree changes between lstat and open: never block, record it.
    pipe = str(tmp_path / 'pipe')
    os.mkfifo(pipe)
    entry = manifest._add_hash(os.fsencode(pipe), {'path': 'pipe', 'type': 'file'}, 'xxh3')
    assert entry['error'] == 'EINVAL: no longer a regular file' and 'hash' not in entry


def test_unreadable_file_recorded_simulated(tmp_path, monkeypatch):
    # Tests usually run as root, where chmod 000 does not stop reading: simulate EACCES.
    real_hash_file = manifest.hash_file

    def hash_file(abs_path, name):
        if abs_path.endswith(b'a.txt'):
            raise PermissionError(13, 'Permission denied')
        return real_hash_file(abs_path, name)

    monkeypatch.setattr(manifest, 'hash_file', hash_file)
    stats = write_manifest(str(make_tree(tmp_path / 'src')), str(tmp_path / 'm'), workers=1)
    got = dict((e['path'], e) for e in entries(tmp_path / 'm'))
    assert got['dir/a.txt']['error'] == 'EACCES: Permission denied' and 'hash' not in got['dir/a.txt']
    assert got['dir/a.txt']['size'] == 5 and stats['errors'] == 1 and stats['entries'] == 6


def test_unlistable_dir_recorded_simulated(tmp_path, monkeypatch):
    src = make_tree(tmp_path / 'src')
    real_scandir = os.scandir

    def scandir(path):
        if path.endswith(b'/sub'):
            raise PermissionError(13, 'Permission denied')
        return real_scandir(path)

    monkeypatch.setattr(manifest.os, 'scandir', scandir)
    got = dict((e['path'], e) for e in entries_of(tmp_path, src))
    assert got['dir/sub']['error'] == 'EACCES: Permission denied' and 'dir/sub/empty' not in got
    assert got['dir/sub']['type'] == 'dir'


# ---------------------------------------------------------------- comparing

def test_identical_trees_in_sync(tmp_path, trees):
    result = audit(tmp_path, *trees)
    assert result['in_sync'] and result['differences'] == 0 and result['examples'] == []
    assert result['counts'] == dict((c, 0) for c in ALL_CHECKS)
    assert result['source_entries'] == result['destination_entries'] == 6
    assert result['warnings'] == [] and result['in_flight'] == 0


def remove(path):
    os.unlink(str(path))


def rewrite_same_size(path):
    path.write_bytes(b'9876543210')


def grow(path):
    path.write_bytes(b'0123456789++')


def file_to_dir(path):
    os.unlink(str(path))
    path.mkdir()


def retarget(path):
    os.unlink(str(path))
    os.symlink('top.bin', str(path))


MUTATIONS = [
    ('missing', 'dir/a.txt', remove, {'missing': 1}),
    ('extra', 'dir/new', lambda p: p.write_bytes(b'new'), {'extra': 1}),
    ('content', 'top.bin', lambda p: keep_mtime(p, rewrite_same_size), {'content': 1}),
    ('size', 'top.bin', lambda p: keep_mtime(p, grow), {'size': 1, 'content': 1}),
    ('type', 'top.bin', file_to_dir, {'type': 1}),
    ('symlink_target', 'link', retarget, {'symlink_target': 1}),
    ('mode', 'dir/a.txt', lambda p: os.chmod(str(p), 0o600), {'mode': 1}),
    ('dir mode', 'dir/sub', lambda p: os.chmod(str(p), 0o700), {'mode': 1}),
    ('mtime', 'top.bin', lambda p: os.utime(str(p), (0, os.stat(str(p)).st_mtime + 10)), {'mtime': 1}),
]


@pytest.mark.parametrize('label, rel, mutate, expected', MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_category_detected(tmp_path, trees, label, rel, mutate, expected):
    src, dst = trees
    mutate(dst / rel)
    result = audit(tmp_path, src, dst)
    assert nonzero(result['counts']) == expected
    assert not result['in_sync'] and result['differences'] == sum(expected.values())
    assert set(e['path'] for e in result['examples']) == set([rel])


def test_example_details(tmp_path, trees):
    src, dst = trees
    keep_mtime(dst / 'top.bin', grow)
    remove(dst / 'dir' / 'a.txt')
    result = audit(tmp_path, src, dst)
    assert result['examples'][0] == {'path': 'dir/a.txt', 'category': 'missing', 'source': 'file', 'destination': None}
    assert result['examples'][1] == {'path': 'top.bin', 'category': 'size', 'source': 10, 'destination': 12}
    assert result['examples'][2]['category'] == 'content'


def test_directory_mtime_and_size_ignored(tmp_path, trees):
    src, dst = trees
    (dst / 'dir' / 'tmp').write_bytes(b'x')
    os.unlink(str(dst / 'dir' / 'tmp'))  # dir mtime changed, content identical
    os.utime(str(dst / 'dir'), (0, 0))
    assert audit(tmp_path, src, dst)['in_sync']


def test_mtime_within_tolerance(tmp_path, trees):
    src, dst = trees
    st = os.stat(str(src / 'top.bin'))
    os.utime(str(dst / 'top.bin'), (0, st.st_mtime + 0.5))
    assert audit(tmp_path, src, dst)['in_sync']
    assert audit(tmp_path, src, dst, mtime_tolerance=0.1)['counts']['mtime'] == 1


def test_categories_switch_off(tmp_path, trees):
    src, dst = trees
    grow(dst / 'top.bin')  # size, content and mtime differ
    os.chmod(str(dst / 'dir' / 'a.txt'), 0o600)
    result = audit(tmp_path, src, dst, checks=['missing', 'extra', 'type', 'symlink_target'])
    assert result['in_sync'] and sorted(result['counts']) == ['extra', 'missing', 'symlink_target', 'type']
    result = audit(tmp_path, src, dst, checks=['mode'])
    assert result['counts'] == {'mode': 1}


def test_unknown_check_rejected(tmp_path, trees):
    with pytest.raises(ValueError):
        audit(tmp_path, *trees, checks=['missing', 'colour'])


def test_content_skipped_without_hashes(tmp_path, trees):
    src, dst = trees
    keep_mtime(dst / 'top.bin', rewrite_same_size)
    result = audit(tmp_path, src, dst, mode='metadata')
    assert result['in_sync'] and 'no hashes' in result['warnings'][0]


def test_content_skipped_when_algorithms_differ(tmp_path, trees):
    src, dst = trees
    write_manifest(str(src), str(tmp_path / 'a'), hash_name='md5')
    write_manifest(str(dst), str(tmp_path / 'b'), hash_name='sha256')
    result = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'))
    assert result['in_sync'] and 'algorithms differ' in result['warnings'][0]


def test_examples_limited_and_report_complete(tmp_path, trees):
    src, dst = trees
    for i in range(5):
        (dst / ('extra%d' % i)).write_bytes(b'')
    (dst / b'\xff new\nline'.decode('utf-8', 'surrogateescape')).write_bytes(b'')
    report = tmp_path / 'report.jsonl'
    result = audit(tmp_path, src, dst, max_examples=2, report=str(report))
    assert result['differences'] == 6 and len(result['examples']) == 2
    lines = [json.loads(line) for line in report.read_bytes().splitlines()]
    assert len(lines) == 6 and all(d['category'] == 'extra' for d in lines)
    assert path_key(lines[-1]['path']) == b'\xff new\nline'


def test_chunked_manifests_compare_like_in_memory(tmp_path, trees):
    src, dst = trees
    for i in range(20):
        (src / ('s%02d' % i)).write_bytes(b's')
        (dst / ('s%02d' % (i + 5))).write_bytes(b's')
    write_manifest(str(src), str(tmp_path / 'a'), chunk_size=3)
    write_manifest(str(dst), str(tmp_path / 'b'), chunk_size=3)
    result = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'))
    assert nonzero(result['counts']) == {'missing': 5, 'extra': 5}


# ---------------------------------------------------------------- invalid manifests

def write_lines(path, *objs):
    path.write_bytes(b''.join(manifest.dump_line(o) for o in objs))
    return str(path)


HEADER = {'manifest': 2, 'root': '/x', 'hash': 'none', 'created': 'now', 'started': 0}


@pytest.mark.parametrize('lines, message', [
    ([], 'empty file'),
    ([{'hello': 1}], 'not a manifest header'),
    ([HEADER, {'path': 'b', 'type': 'file'}, {'path': 'a', 'type': 'file'}], 'not in tree order'),
    ([HEADER, {'path': 'a', 'type': 'file'}, {'path': 'a', 'type': 'file'}], 'not in tree order'),
    # byte order puts a.txt before a/b; tree order puts a directory's content first
    ([HEADER, {'path': 'a', 'type': 'dir'}, {'path': 'a.txt', 'type': 'file'}, {'path': 'a/b', 'type': 'file'}],
     'not in tree order'),
    ([{'manifest': 1, 'root': '/x'}], 'not a manifest header'),
    ([HEADER, {'type': 'file'}], 'without "path"'),
    ([HEADER, ['path']], 'not a JSON object'),
])
def test_invalid_manifest(tmp_path, lines, message):
    bad = write_lines(tmp_path / 'bad', *lines)
    good = write_lines(tmp_path / 'good', HEADER)
    with pytest.raises(ManifestError, match=message):
        compare_manifests(good, bad)


def test_not_json(tmp_path):
    (tmp_path / 'bad').write_bytes(b'{"manifest": 2}\nnot json\n')
    with pytest.raises(ManifestError, match='line 2: invalid JSON'):
        compare_manifests(write_lines(tmp_path / 'good', HEADER), str(tmp_path / 'bad'))


def test_unreadable_manifest_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        compare_manifests(str(tmp_path / 'nope'), str(tmp_path / 'nope'))


# ---------------------------------------------------------------- walk order and fast comparison

def test_walk_without_directory_descriptors_same(tmp_path, monkeypatch):
    # Deep trees are read by absolute path beyond _MAX_DIR_FDS open directories: same manifest.
    src = make_tree(tmp_path / 'src')
    (src / 'dir' / 'sub' / 'deeper' / 'deepest').mkdir(parents=True)
    (src / 'dir' / 'sub' / 'deeper' / 'deepest' / 'f').write_bytes(b'f')
    os.symlink('../f', str(src / 'dir' / 'sub' / 'deeper' / 'deepest' / 'l'))
    write_manifest(str(src), str(tmp_path / 'fds'))
    for limit in (0, 1, 2):
        monkeypatch.setattr(manifest, '_MAX_DIR_FDS', limit)
        write_manifest(str(src), str(tmp_path / 'paths'))
        assert (tmp_path / 'paths').read_bytes().splitlines()[1:] == (tmp_path / 'fds').read_bytes().splitlines()[1:]


def test_lines_in_byte_order_of_the_tree_keys(tmp_path):
    src = tmp_path / 'src'
    for rel in ('a-c', 'a/b-c/d', 'a/b/e', 'a.', 'a0', 'b', 'a\tb', 'a\nb', '\u00e9', 'z/\u00e9/x'):
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x')
    keys = [path_key(e['path']) for e in entries_of(tmp_path, src)]
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == 15


def test_old_key_order_compares_like_the_writers(tmp_path, trees):
    # Readers take any JSON object per line: a manifest with sorted keys (the first writer's) gives the same result.
    src, dst = trees
    keep_mtime(dst / 'top.bin', grow)
    os.chmod(str(dst / 'dir' / 'a.txt'), 0o600)
    os.unlink(str(dst / 'link'))
    write_manifest(str(src), str(tmp_path / 'a'), hash_name='blake2b')
    write_manifest(str(dst), str(tmp_path / 'b'), hash_name='blake2b')
    lines = (tmp_path / 'b').read_bytes().splitlines(True)
    (tmp_path / 'b_sorted').write_bytes(lines[0] + b''.join(manifest.dump_line(json.loads(line)) for line in lines[1:]))
    new = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'))
    old = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b_sorted'))
    assert new == old and nonzero(new['counts']) == {'size': 1, 'content': 1, 'mode': 1, 'missing': 1}


def test_equal_lines_with_errors_still_unreadable(tmp_path, trees):
    src, _dst = trees
    write_manifest(str(src), str(tmp_path / 'a'))
    lines = (tmp_path / 'a').read_bytes().splitlines(True)
    broken = [line.replace(b',"ctime":', b',"error":"EIO: Input/output error","ctime":') if b'top.bin' in line
              else line for line in lines]
    (tmp_path / 'b').write_bytes(b''.join(broken))
    result = compare_manifests(str(tmp_path / 'b'), str(tmp_path / 'b'))
    assert nonzero(result['counts']) == {'unreadable': 1} and result['source_errors'] == 1


def test_threads_hash_like_processes(tmp_path, monkeypatch):
    # Where no process pool can be made, threads hash: same manifest.
    src = make_tree(tmp_path / 'src')
    for i in range(20):
        (src / ('f%02d' % i)).write_bytes(b'z' * i)
    monkeypatch.setattr(manifest, '_BATCH_FILES', 4)
    write_manifest(str(src), str(tmp_path / 'processes'), workers=2)
    monkeypatch.setattr(manifest, '_HASH_IN_PROCESSES', False)
    write_manifest(str(src), str(tmp_path / 'threads'), workers=2)
    monkeypatch.setattr(manifest, '_HASH_IN_PROCESSES', True)
    monkeypatch.setattr(manifest, '_process_pool', lambda workers: None)
    write_manifest(str(src), str(tmp_path / 'fallback'), workers=2)
    processes = (tmp_path / 'processes').read_bytes().splitlines()[1:]
    assert processes == (tmp_path / 'threads').read_bytes().splitlines()[1:]
    assert processes == (tmp_path / 'fallback').read_bytes().splitlines()[1:]
    assert sum(1 for line in processes if b'"hash"' in line) == 23

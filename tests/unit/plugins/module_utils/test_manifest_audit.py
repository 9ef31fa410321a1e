# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit behaviour on real trees: hostile names, odd file types, permissions,
hash algorithms, sampling, sr3 reject patterns, in-flight tolerance, repair lists."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils import manifest
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import (
    HashUnavailable,
    ManifestReader,
    Selector,
    choose_hash,
    compare_manifests,
    path_bytes,
    reject_url_base,
    write_manifest,
)

COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(manifest.__file__)))))
NOBODY = 65534


def b(path):
    return os.fsencode(str(path))


def put(root, rel, data=b'x'):
    """Write a file named by bytes ``rel`` below ``root``, creating parents."""
    path = os.path.join(b(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as fh:
        fh.write(data)
    return path


def entries(path):
    with ManifestReader(str(path)) as reader:
        return dict((path_bytes(e['path']), e) for _k, e in reader)


def scan(tmp_path, root, name='m', **kwargs):
    write_manifest(str(root), str(tmp_path / name), **kwargs)
    return entries(tmp_path / name)


def audit(tmp_path, src, dst, mode='content', manifest_args=None, **kwargs):
    manifest_args = manifest_args or {}
    write_manifest(str(src), str(tmp_path / 'src.manifest'), mode, **manifest_args)
    write_manifest(str(dst), str(tmp_path / 'dst.manifest'), mode, **manifest_args)
    return compare_manifests(str(tmp_path / 'src.manifest'), str(tmp_path / 'dst.manifest'), **kwargs)


def nonzero(counts):
    return dict((k, v) for k, v in counts.items() if v)


def report_paths(path):
    with open(str(path), 'rb') as fh:
        return [(path_bytes(d['path']), d['category']) for d in map(json.loads, fh)]


# ---------------------------------------------------------------- hostile names

HOSTILE = [
    b'with space', b' leading space', b'trailing space ', b'new\nline', b'\nstarts with newline',
    b'-leading-dash', b'--double-dash', b'-', b'\xff\xfe not utf-8 \xe9', b'carriage\rreturn',
    b'tab\tquote"back\\slash', u'\u00fcn\u00efc\u00f6d\u00e9 \u6f22\u5b57'.encode('utf-8'), b'*?[glob]', b'$(echo no)',
    b'a' * 255,  # NAME_MAX
]


@pytest.fixture
def hostile_tree(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for name in HOSTILE:
        put(src, name, name)
        put(src, b'dir ' + name[:200] + b'/inner', b'in ' + name)
    return src


def test_hostile_names_round_trip(tmp_path, hostile_tree):
    got = scan(tmp_path, hostile_tree, hash_name='blake2b')
    assert len(got) == 3 * len(HOSTILE)
    for name in HOSTILE:
        assert got[name]['type'] == 'file' and got[name]['size'] == len(name)
        inner = b'dir ' + name[:200] + b'/inner'
        assert got[inner]['type'] == 'file' and got[b'dir ' + name[:200]]['type'] == 'dir'
    # one entry per line whatever the names: header + entries
    assert len((tmp_path / 'm').read_bytes().split(b'\n')) == 3 * len(HOSTILE) + 2


def test_hostile_names_each_difference_found(tmp_path, hostile_tree):
    dst = tmp_path / 'dst'
    shutil.copytree(str(hostile_tree), str(dst), symlinks=True)
    for name in HOSTILE[::2]:
        os.unlink(os.path.join(b(dst), name))
    for name in HOSTILE[1::2]:
        path = os.path.join(b(dst), b'dir ' + name[:200], b'inner')
        st = os.stat(path)
        with open(path, 'wb') as fh:
            fh.write(b'IN ' + name)  # same size, same mtime: only the content differs
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    put(dst, b'-extra\n\xff')
    result = audit(tmp_path, hostile_tree, dst, report=str(tmp_path / 'report'),
                   repost_list=str(tmp_path / 'repost'), delete_list=str(tmp_path / 'delete'))
    missing = len(HOSTILE[::2])
    changed = len(HOSTILE[1::2])
    assert nonzero(result['counts']) == {'missing': missing, 'content': changed, 'extra': 1}
    found = set(report_paths(tmp_path / 'report'))
    assert found == set([(n, 'missing') for n in HOSTILE[::2]]
                        + [(b'dir ' + n[:200] + b'/inner', 'content') for n in HOSTILE[1::2]]
                        + [(b'-extra\n\xff', 'extra')])
    # the repair lists are NUL-separated absolute bytes paths, newlines and all
    repost = (tmp_path / 'repost').read_bytes().split(b'\0')[:-1]
    assert sorted(repost) == sorted([os.path.join(b(hostile_tree), n) for n in HOSTILE[::2]]
                                    + [os.path.join(b(hostile_tree), b'dir ' + n[:200], b'inner')
                                       for n in HOSTILE[1::2]])
    assert result['repost'] == missing + changed
    assert (tmp_path / 'delete').read_bytes() == os.path.join(b(dst), b'-extra\n\xff') + b'\0'
    assert result['delete'] == 1
    # module results must be valid text: undecodable bytes are shown as \xNN
    from ansible_collections.sr3.hpc_mirror.plugins.modules.manifest_compare import printable_example
    shown = [printable_example(d)['path'] for d in result['examples']]
    assert '-extra\n\\xff' in shown


def test_long_paths(tmp_path):
    """Deep paths near PATH_MAX are read; beyond it the directory is reported, the audit goes on."""
    src = tmp_path / 'src'
    src.mkdir()
    component = b'd' * 250
    deep = b'/'.join([component] * 14)  # 3513 bytes below src: still under PATH_MAX with the prefix
    put(src, deep + b'/f', b'deep')
    got = scan(tmp_path, src)
    assert got[deep + b'/f']['size'] == 4
    # Beyond PATH_MAX (4096): made with relative steps, since the absolute path is too long to use.
    fd = os.open(os.path.join(b(src), deep), os.O_RDONLY)
    try:
        os.mkdir(component, dir_fd=fd)
        os.mkdir(component + b'/' + component, dir_fd=fd)
        os.mkdir(component + b'/' + component + b'/' + component, dir_fd=fd)
    finally:
        os.close(fd)
    write_manifest(str(src), str(tmp_path / 'm2'))
    got = entries(tmp_path / 'm2')
    too_long = [e for e in got.values() if 'error' in e]
    assert too_long and all(e['error'].startswith('ENAMETOOLONG') for e in too_long)
    assert got[deep + b'/f']['size'] == 4


# ---------------------------------------------------------------- links and special files

def test_symlink_loops_and_dangling_links(tmp_path):
    src = tmp_path / 'src'
    (src / 'dir').mkdir(parents=True)
    os.symlink('loop_b', str(src / 'loop_a'))
    os.symlink('loop_a', str(src / 'loop_b'))
    os.symlink('.', str(src / 'dir' / 'self'))
    os.symlink('..', str(src / 'dir' / 'parent'))
    os.symlink('/nonexistent/target', str(src / 'dangling'))
    got = scan(tmp_path, src)
    assert sorted(got) == [b'dangling', b'dir', b'dir/parent', b'dir/self', b'loop_a', b'loop_b']
    assert got[b'loop_a']['target'] == 'loop_b' and got[b'dangling']['target'] == '/nonexistent/target'
    assert all('error' not in e for e in got.values())
    dst = tmp_path / 'dst'
    shutil.copytree(str(src), str(dst), symlinks=True)
    os.unlink(str(dst / 'dangling'))
    os.symlink('/elsewhere', str(dst / 'dangling'))
    os.unlink(str(dst / 'loop_b'))
    result = audit(tmp_path, src, dst)
    assert nonzero(result['counts']) == {'symlink_target': 1, 'missing': 1}


def test_hard_links_are_two_files(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'one').write_bytes(b'shared')
    os.link(str(src / 'one'), str(src / 'two'))
    got = scan(tmp_path, src)
    assert got[b'one']['hash'] == got[b'two']['hash'] and got[b'two']['type'] == 'file'
    dst = tmp_path / 'dst'
    dst.mkdir()
    (dst / 'one').write_bytes(b'shared')  # the copy lost the link: same content, still in sync
    shutil.copystat(str(src / 'one'), str(dst / 'one'))
    (dst / 'two').write_bytes(b'shared')
    shutil.copystat(str(src / 'two'), str(dst / 'two'))
    assert audit(tmp_path, src, dst)['in_sync']


def test_empty_directories(tmp_path):
    src = tmp_path / 'src'
    (src / 'empty' / 'nested_empty').mkdir(parents=True)
    dst = tmp_path / 'dst'
    dst.mkdir()
    shutil.copystat(str(src), str(dst))
    result = audit(tmp_path, src, dst)
    assert nonzero(result['counts']) == {'missing': 2}
    assert [e['path'] for e in result['examples']] == ['empty', 'empty/nested_empty']


def test_special_files(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    os.mkfifo(str(src / 'fifo'))
    os.mkfifo(str(src / 'fifo_missing'))
    (src / 'was_fifo').write_bytes(b'')
    dst = tmp_path / 'dst'
    dst.mkdir()
    os.mkfifo(str(dst / 'fifo'))
    os.mkfifo(str(dst / 'was_fifo'))
    for name in ('fifo', 'was_fifo'):
        shutil.copystat(str(src / name), str(dst / name))
    result = audit(tmp_path, src, dst)
    assert nonzero(result['counts']) == {'missing': 1, 'type': 1}
    got = entries(tmp_path / 'src.manifest')
    assert got[b'fifo']['type'] == 'other' and 'hash' not in got[b'fifo']


# ---------------------------------------------------------------- permissions

def as_unprivileged(function, *args):
    """Call ``function(*args)`` in a forked child as an unprivileged user (nobody when we are root).

    Fork without exec: nobody may not be able to run this Python (under /root). Returns the
    child's exit status, 0 when the call returned.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            function(*args)
            status = 0
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def open_tmp():
    """A temporary directory an unprivileged user can use (pytest's tmp_path is root's, mode 0700)."""
    path = tempfile.mkdtemp(prefix='hpc_mirror_perm_', dir='/var/tmp')
    os.chmod(path, 0o777)
    yield path
    for dirpath, dirnames, _files in os.walk(path):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
    shutil.rmtree(path)


def test_permission_denied_reported_not_fatal(open_tmp):
    src = os.path.join(open_tmp, 'src')
    os.makedirs(os.path.join(src, 'closed_dir'))
    os.makedirs(os.path.join(src, 'open_dir'))
    for rel in ('closed_file', 'closed_dir/hidden', 'open_dir/ok'):
        with open(os.path.join(src, rel), 'wb') as fh:
            fh.write(b'data')
    dst = os.path.join(open_tmp, 'dst')
    shutil.copytree(src, dst, symlinks=True)
    os.chmod(os.path.join(src, 'closed_file'), 0)
    os.chmod(os.path.join(src, 'closed_dir'), 0)
    assert as_unprivileged(write_manifest, src, os.path.join(open_tmp, 'src.manifest'), 'content', 'blake2b') == 0
    got = entries(os.path.join(open_tmp, 'src.manifest'))
    assert got[b'closed_file']['error'] == 'EACCES: Permission denied' and 'hash' not in got[b'closed_file']
    assert got[b'closed_file']['size'] == 4  # lstat still worked
    assert got[b'closed_dir']['error'].startswith('EACCES') and b'closed_dir/hidden' not in got
    assert 'hash' in got[b'open_dir/ok']
    os.chmod(os.path.join(dst, 'closed_file'), 0)
    os.chmod(os.path.join(dst, 'closed_dir'), 0)
    write_manifest(dst, os.path.join(open_tmp, 'dst.manifest'), hash_name='blake2b')  # root reads it all
    result = compare_manifests(os.path.join(open_tmp, 'src.manifest'), os.path.join(open_tmp, 'dst.manifest'))
    counts = nonzero(result['counts'])
    # what the source could not list shows up on the destination only
    assert counts == {'unreadable': 2, 'extra': 1} if os.geteuid() == 0 else counts.get('unreadable') >= 2
    assert result['source_errors'] == 2
    unreadable = [e for e in result['examples'] if e['category'] == 'unreadable']
    assert set(e['path'] for e in unreadable) == set(['closed_dir', 'closed_file'])


def test_unreadable_category_switches_off(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x')
    write_manifest(str(src), str(tmp_path / 'a'))
    lines = (tmp_path / 'a').read_bytes().splitlines()
    broken = json.loads(lines[1])
    broken['error'] = 'EIO: Input/output error'
    del broken['hash']
    (tmp_path / 'b').write_bytes(lines[0] + b'\n' + manifest.dump_line(broken))
    result = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'))
    assert nonzero(result['counts']) == {'unreadable': 1}
    assert result['examples'][0]['destination'] == 'EIO: Input/output error'
    checks = [c for c in manifest.ALL_CHECKS if c != 'unreadable']
    assert compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'), checks=checks)['in_sync']


# ---------------------------------------------------------------- hash algorithms

def test_fast_hashes_are_the_libraries_digests(tmp_path):
    xxhash = pytest.importorskip('xxhash')
    blake3 = pytest.importorskip('blake3')
    src = tmp_path / 'src'
    src.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 7)  # several read blocks
    (src / 'f').write_bytes(data)
    assert scan(tmp_path, src, hash_name='xxh3')[b'f']['hash'] == xxhash.xxh3_128(data).hexdigest()
    assert scan(tmp_path, src, hash_name='blake3')[b'f']['hash'] == blake3.blake3(data).hexdigest()
    assert manifest.DEFAULT_HASH == 'xxh3'


def test_missing_library_falls_back_with_a_message():
    code = ('import sys; sys.modules["xxhash"] = None\n'  # this interpreter cannot import xxhash
            'from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import choose_hash\n'
            'print(choose_hash("xxh3", "blake2b"))\n'
            'try:\n    choose_hash("xxh3", None)\nexcept ValueError as exc:\n    print("FAILED", exc)\n')
    out = subprocess.run([sys.executable, '-c', code], env=dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT),
                         capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    assert first.startswith("('blake2b', 'hash xxh3 needs the Python package xxhash")
    assert 'falling back to blake2b' in first
    assert second.startswith('FAILED hash xxh3 needs the Python package xxhash')


def test_available_hash_needs_no_fallback():
    assert choose_hash('sha256', 'blake2b') == ('sha256', None)
    with pytest.raises(ValueError):
        choose_hash('crc32', 'blake2b')
    assert issubclass(HashUnavailable, ValueError)


# ---------------------------------------------------------------- sample mode

@pytest.fixture
def many(tmp_path):
    src = tmp_path / 'src'
    for i in range(200):
        put(src, ('d%d/f%03d' % (i % 7, i)).encode(), b'%d' % i)
    dst = tmp_path / 'dst'
    shutil.copytree(str(src), str(dst))
    return src, dst


def hashed(path):
    return set(p for p, e in entries(path).items() if 'hash' in e)


def test_sample_fraction_same_paths_on_both_sides(tmp_path, many):
    src, dst = many
    stats = write_manifest(str(src), str(tmp_path / 'a'), 'sample', sample_fraction=0.25, sample_seed='s1')
    write_manifest(str(dst), str(tmp_path / 'b'), 'sample', sample_fraction=0.25, sample_seed='s1')
    assert hashed(tmp_path / 'a') == hashed(tmp_path / 'b')
    assert 25 <= stats['hashed_files'] <= 75 and stats['hashed_files'] == len(hashed(tmp_path / 'a'))
    write_manifest(str(src), str(tmp_path / 'c'), 'sample', sample_fraction=0.25, sample_seed='s2')
    assert hashed(tmp_path / 'c') != hashed(tmp_path / 'a')


def test_sample_count_exact_and_finds_content(tmp_path, many):
    src, dst = many
    write_manifest(str(src), str(tmp_path / 'a'), 'sample', sample_count=10, sample_seed='x')
    chosen = sorted(hashed(tmp_path / 'a'))
    assert len(chosen) == 10
    victim = os.path.join(b(dst), chosen[3])
    st = os.stat(victim)
    with open(victim, 'r+b') as fh:
        fh.write(b'Z')  # same size, same mtime
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    stats = write_manifest(str(dst), str(tmp_path / 'b'), 'sample', sample_count=10, sample_seed='x')
    assert stats['hashed_files'] == 10 and hashed(tmp_path / 'b') == set(chosen)
    result = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'))
    assert nonzero(result['counts']) == {'content': 1} and path_bytes(result['examples'][0]['path']) == chosen[3]
    assert result['warnings'] == []


def test_sample_needs_one_size():
    with pytest.raises(ValueError):
        manifest.Sampler()
    with pytest.raises(ValueError):
        manifest.Sampler(fraction=0.5, count=3)
    with pytest.raises(ValueError):
        manifest.Sampler(fraction=1.5)


# ---------------------------------------------------------------- sr3 reject patterns

def sr3_rejects(patterns, url):
    """Whether sr3 itself, reading a copier's reject/accept lines, rejects ``url``."""
    import sarracenia.config
    options = sarracenia.config.default_config()
    lines = ['reject %s' % p for p in patterns] + ['accept .*']
    with tempfile.NamedTemporaryFile('w', suffix='.conf', delete=False) as fh:
        fh.write('\n'.join(lines) + '\n')
    try:
        options.parse_file(fh.name, 'sarra')
    finally:
        os.unlink(fh.name)
    for mask in options.masks:
        pattern, _dir, _opt, regexp, accepting = mask[:5]
        if pattern == '.*' or regexp.match(url):
            return not accepting
    return False


REJECT = [r'.*\.tmp$', r'.*\.lock$', r'.*/cache$', r'^file:/data/src/scratch/.*']
URLS_TO_TRY = ['a.tmp', 'a.tmp.keep', 'x/b.lock', 'cache', 'x/cache', 'x/cache/kept', 'scratch', 'scratch/f',
               'scratch/deep/f', 'notscratch/f', 'tmp', 'x.TMP']


@pytest.mark.parametrize('rel', URLS_TO_TRY)
def test_reject_matches_like_sr3(rel):
    pytest.importorskip('sarracenia')
    selector = Selector(reject=REJECT, reject_base=reject_url_base('/data/src/'))
    assert selector.rejected(rel) == sr3_rejects(REJECT, 'file:/data/src/' + rel)


def test_reject_on_both_sides_by_source_url(tmp_path):
    src = tmp_path / 'src'
    for rel in (b'keep', b'part.tmp', b'x/cache/inside', b'scratch/f', b'scratch2/f'):
        put(src, rel)
    dst = tmp_path / 'dst'
    shutil.copytree(str(src), str(dst))
    put(dst, b'copier.tmp')          # the copier's own partial file
    os.unlink(os.path.join(b(dst), b'scratch/f'))
    reject = [r'.*\.tmp$', r'.*/cache$', r'^file:%s/scratch/.*' % src]
    base = reject_url_base(str(src))
    got = scan(tmp_path, dst, reject=reject, reject_base=base)
    # x/cache itself is rejected, what is below it is not (sr3 matches each path alone)
    assert sorted(got) == [b'keep', b'scratch', b'scratch2', b'scratch2/f', b'x', b'x/cache/inside']
    result = audit(tmp_path, src, dst, manifest_args={'reject': reject, 'reject_base': base})
    assert result['in_sync'], result['examples']


# ---------------------------------------------------------------- in flight

def settled(tmp_path, src, dst):
    """Manifests of both trees; everything older than 1 s before is settled."""
    write_manifest(str(src), str(tmp_path / 'a'))
    write_manifest(str(dst), str(tmp_path / 'b'))
    return compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'), settle=1.0,
                             repost_list=str(tmp_path / 'repost'), delete_list=str(tmp_path / 'delete'))


def test_in_flight_not_a_difference(tmp_path):
    src = tmp_path / 'src'
    for rel in (b'old_missing', b'quiet/old_extra_dir/f', b'changed', b'gone/f', b'moved/f', b'stay/old_extra', b'stay/f'):
        put(src, rel, b'v1')
    dst = tmp_path / 'dst'
    shutil.copytree(str(src), str(dst), symlinks=True)
    os.unlink(os.path.join(b(dst), b'old_missing'))
    shutil.rmtree(os.path.join(b(src), b'quiet/old_extra_dir'))
    os.unlink(os.path.join(b(src), b'stay/old_extra'))
    time.sleep(1.2)
    # now the "live" changes, which the flow has not caught up with yet
    put(src, b'new_file', b'new')                          # missing, just written
    put(src, b'changed', b'v2 longer')                     # size and content, just written
    os.rename(os.path.join(b(src), b'moved'), os.path.join(b(src), b'moved_to'))  # a directory moved in
    shutil.rmtree(os.path.join(b(src), b'gone'))           # extra, parent changed just now
    result = settled(tmp_path, src, dst)
    in_flight = dict((path_bytes(e['path']), e['categories']) for e in result['in_flight_examples'])
    assert in_flight == {b'new_file': ['missing'], b'changed': ['size', 'content', 'mtime'],
                         b'moved_to': ['missing'], b'moved_to/f': ['missing'],
                         b'moved': ['extra'], b'moved/f': ['extra'], b'gone': ['extra'], b'gone/f': ['extra']}
    # what is old is still a difference
    assert nonzero(result['counts']) == {'missing': 1, 'extra': 3}
    assert set((path_bytes(e['path']), e['category']) for e in result['examples']) == set(
        [(b'old_missing', 'missing'), (b'quiet/old_extra_dir', 'extra'), (b'quiet/old_extra_dir/f', 'extra'),
         (b'stay/old_extra', 'extra')])
    # in-flight paths are left to the flow: not in the repair lists
    assert (tmp_path / 'repost').read_bytes() == os.path.join(b(src), b'old_missing') + b'\0'
    assert sorted((tmp_path / 'delete').read_bytes().split(b'\0')[:-1]) == sorted(
        os.path.join(b(dst), p) for p in (b'quiet/old_extra_dir', b'quiet/old_extra_dir/f', b'stay/old_extra'))


def test_settle_zero_reports_everything(tmp_path):
    src = tmp_path / 'src'
    put(src, b'f')
    dst = tmp_path / 'dst'
    dst.mkdir()
    write_manifest(str(src), str(tmp_path / 'a'))
    write_manifest(str(dst), str(tmp_path / 'b'))
    result = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'))
    assert result['counts']['missing'] == 1 and result['in_flight'] == 0
    result = compare_manifests(str(tmp_path / 'a'), str(tmp_path / 'b'), settle=60)
    assert result['in_sync'] and result['in_flight'] == 1


# ---------------------------------------------------------------- tree order

def test_tree_order_keeps_a_directory_with_its_content(tmp_path):
    src = tmp_path / 'src'
    for rel in (b'a/b', b'a.txt', b'a-b', b'a/c/d', b'a0'):
        put(src, rel)
    got = list(entries(scan_path(tmp_path, src)))
    assert got == [b'a', b'a/b', b'a/c', b'a/c/d', b'a-b', b'a.txt', b'a0']


def scan_path(tmp_path, root):
    write_manifest(str(root), str(tmp_path / 'm'))
    return tmp_path / 'm'


def test_open_failure_is_recorded(tmp_path):
    assert manifest._error_text(OSError(errno.ENOENT, 'No such file or directory')) == \
        'ENOENT: No such file or directory'


# ---------------------------------------------------------------- parallel walk

@pytest.mark.parametrize('mode', ['metadata', 'content', 'sample'])
def test_parallel_walk_writes_what_one_process_writes(tmp_path, hostile_tree, monkeypatch, mode):
    """The walk in worker processes and the walk in this process give the same manifest, selections included."""
    src = hostile_tree
    for rel in (b'keep/part.tmp', b'keep/cache/inside', b'skip/f', b'x/-dash/f', b'x/-dash/g.tmp'):
        put(src, rel)
    os.symlink('nowhere', os.path.join(b(src), b'x', b'link'))
    os.mkfifo(os.path.join(b(src), b'x', b'fifo'))
    os.makedirs(os.path.join(b(src), b'empty', b'dir'))
    args = dict(mode=mode, hash_name='blake2b', exclude=[r'^skip$'], reject=[r'.*\.tmp$', r'.*/cache$'],
                reject_base=reject_url_base(str(src)), sample_fraction=0.5 if mode == 'sample' else None,
                sample_seed='s')
    monkeypatch.setattr(manifest, '_BATCH_FILES', 3)
    monkeypatch.setattr(manifest, '_HASH_IN_PROCESSES', True)
    parallel = write_manifest(str(src), str(tmp_path / 'parallel'), workers=2, **args)
    monkeypatch.setattr(manifest, '_HASH_IN_PROCESSES', False)
    alone = write_manifest(str(src), str(tmp_path / 'alone'), workers=2, **args)
    assert parallel == alone
    lines = (tmp_path / 'parallel').read_bytes().split(b'\n')[1:]
    assert lines == (tmp_path / 'alone').read_bytes().split(b'\n')[1:]
    got = entries(tmp_path / 'parallel')
    assert b'skip' not in got and b'keep/part.tmp' not in got and b'keep/cache' not in got
    assert got[b'keep/cache/inside']['type'] == 'file' and got[b'x/fifo']['type'] == 'other'
    assert got[b'empty/dir']['type'] == 'dir' and parallel['entries'] == len(got)

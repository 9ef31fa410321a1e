# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tree manifests: walk a directory tree, write a sorted manifest, compare two.

Trees may hold many millions of entries, so everything streams: the walk is an
iterative generator, more than ``chunk_size`` entries are sorted in chunks
spilled to temporary files and merged, and two manifests are compared with one
merge pass that holds a single entry of each side in memory.

Manifest format (JSON lines, ASCII only)::

    {"created": "...", "exclude": [...], "hash": "blake2b", "manifest": 1, "root": "/data"}
    {"hash": "...", "mode": 420, "mtime": 1700000000.5, "path": "a/b.txt", "size": 12, "type": "file"}

* The first line is the header; every following line is one entry, sorted by
  the raw bytes of ``path`` (the root itself is not an entry).
* Paths are bytes on disk. They are decoded as UTF-8 with ``surrogateescape``
  (bytes that are not valid UTF-8 become lone surrogates U+DC80..U+DCFF) and
  written with ``ensure_ascii`` JSON, so a name such as ``b"\\xff\\n"`` is
  stored as ``"\\udcff\\n"``. Python's ``json`` restores it exactly and
  ``path.encode("utf-8", "surrogateescape")`` gives the original bytes back.
  Newlines in names are JSON escaped, so one entry is always one line.
  Symlink targets are encoded the same way.
* ``type`` is ``file``, ``dir``, ``symlink`` or ``other`` (FIFO, socket,
  device). ``size``, ``mtime`` (float seconds) and ``mode`` (permission bits,
  ``stat.S_IMODE``) come from ``lstat``. Symlinks carry ``target``; regular
  files carry ``hash`` (hex digest) unless the algorithm is ``none``. An entry
  that could not be fully read carries ``error`` (for example
  ``"EACCES: Permission denied"``) and lacks what could not be read.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import concurrent.futures
import datetime
import errno
import hashlib
import heapq
import json
import os
import re
import stat
import tempfile
import threading

MANIFEST_VERSION = 1
HASH_CHOICES = ('blake2b', 'md5', 'sha256', 'none')
DEFAULT_HASH = 'blake2b'
# Entries held in memory before a sorted chunk is spilled to a temporary file.
CHUNK_SIZE = 200000
ALL_CHECKS = ('missing', 'extra', 'type', 'size', 'content', 'symlink_target', 'mode', 'mtime')
_READ_SIZE = 1024 * 1024
_buffers = threading.local()
# Files per hashing task, or fewer when they add up to _BATCH_BYTES.
_BATCH_FILES = 256
_BATCH_BYTES = 64 * 1024 * 1024


class ManifestError(Exception):
    """A manifest file is not a valid manifest."""


# ---------------------------------------------------------------- encoding

def decode_path(raw):
    """Bytes path -> text that round-trips any bytes (see module docstring)."""
    return raw.decode('utf-8', 'surrogateescape')


def path_key(text):
    """Sort key of an encoded path: its original bytes."""
    return text.encode('utf-8', 'surrogateescape')


def printable(text):
    """Encoded path -> readable text with undecodable bytes shown as ``\\xNN``.

    For module results, which must be valid Unicode; the manifest and report
    files keep the exact encoding.
    """
    return path_key(text).decode('utf-8', 'backslashreplace')


def dump_line(obj):
    """One JSON line (bytes); ensure_ascii keeps lone surrogates and newlines escaped."""
    return json.dumps(obj, ensure_ascii=True, sort_keys=True, separators=(',', ':')).encode('ascii') + b'\n'


def _error_text(exc):
    name = errno.errorcode.get(exc.errno, type(exc).__name__)
    return '%s: %s' % (name, exc.strerror or exc)


# ---------------------------------------------------------------- walking

def compile_excludes(patterns):
    """Compile exclude regexes (``re.search`` on the relative path)."""
    return [re.compile(p) for p in patterns or ()]


def _is_excluded(rel, patterns):
    return any(p.search(rel) for p in patterns)


def _kind(mode):
    if stat.S_ISREG(mode):
        return 'file'
    if stat.S_ISDIR(mode):
        return 'dir'
    if stat.S_ISLNK(mode):
        return 'symlink'
    return 'other'


def _make_entry(rel, st):
    return {
        'path': rel,
        'type': _kind(st.st_mode),
        'size': st.st_size,
        'mtime': st.st_mtime,
        'mode': stat.S_IMODE(st.st_mode),
    }


def _child_entry(rel, dir_entry):
    """Entry for one scandir child, or None when it vanished meanwhile."""
    try:
        st = dir_entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        # Deleted between listing and stat: normal in a live tree, not an error.
        return None
    except OSError as exc:
        return {'path': rel, 'type': 'other', 'error': _error_text(exc)}
    entry = _make_entry(rel, st)
    if entry['type'] == 'symlink':
        try:
            entry['target'] = decode_path(os.readlink(dir_entry.path))
        except OSError as exc:
            entry['error'] = _error_text(exc)
    return entry


def walk_tree(root, exclude=None):
    """Yield ``(abs_path_bytes, entry)`` for everything below ``root``, unordered.

    Iterative depth-first walk with ``os.scandir`` on bytes paths; symlinks are
    never followed. An excluded directory is skipped with its whole subtree.
    A directory's entry is yielded after its listing, so a listing failure is
    recorded in its ``error``. Failing to list ``root`` itself raises OSError.
    """
    patterns = compile_excludes(exclude)
    root_b = os.fsencode(root)
    stack = [(b'', None)]
    while stack:
        rel_dir, dir_entry = stack.pop()
        abs_dir = os.path.join(root_b, rel_dir) if rel_dir else root_b
        try:
            with os.scandir(abs_dir) as listing:
                for child in listing:
                    rel_b = rel_dir + b'/' + child.name if rel_dir else child.name
                    rel = decode_path(rel_b)
                    if _is_excluded(rel, patterns):
                        continue
                    entry = _child_entry(rel, child)
                    if entry is None:
                        continue
                    if entry['type'] == 'dir':
                        stack.append((rel_b, entry))
                    else:
                        yield child.path, entry
        except OSError as exc:
            if dir_entry is None:
                raise
            dir_entry['error'] = _error_text(exc)
        if dir_entry is not None:
            yield abs_dir, dir_entry


# ---------------------------------------------------------------- hashing

def new_hash(name):
    """hashlib object for ``name``; ValueError if unknown or unavailable (FIPS md5)."""
    if name not in HASH_CHOICES or name == 'none':
        raise ValueError('unsupported hash algorithm: %s' % name)
    return hashlib.new(name)


def check_hash_name(name):
    """Raise ValueError unless ``name`` is a usable choice (``none`` included)."""
    if name != 'none':
        new_hash(name)


def _open_regular(abs_path):
    """Open for reading, without following or blocking on what replaced the file since its lstat.

    The tree changes under our feet: a file may have become a symlink or a FIFO.
    """
    fd = os.open(abs_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, 'no longer a regular file')
    return os.fdopen(fd, 'rb')


def _read_buffer():
    """This thread's 1 MiB read buffer: allocating one per file costs more than hashing a small file."""
    if not hasattr(_buffers, 'buf'):
        _buffers.buf = bytearray(_READ_SIZE)
        _buffers.view = memoryview(_buffers.buf)
    return _buffers.buf, _buffers.view


def hash_file(abs_path, name):
    """Hex digest of a file's content, read in 1 MiB blocks."""
    digest = new_hash(name)
    buf, view = _read_buffer()
    with _open_regular(abs_path) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def _add_hash(abs_path, entry, name):
    try:
        entry['hash'] = hash_file(abs_path, name)
    except OSError as exc:
        entry['error'] = _error_text(exc)
    return entry


def _hash_batch(batch, name):
    return [_add_hash(abs_path, entry, name) for abs_path, entry in batch]


def _batches(walk, passthrough):
    """Group the regular files of ``walk`` into batches of ``(abs_path, entry)``.

    Batches hold up to _BATCH_FILES files or _BATCH_BYTES bytes: one thread
    task per small file would cost more than hashing it. Other entries are
    handed to ``passthrough`` at once.
    """
    batch, size = [], 0
    for abs_path, entry in walk:
        # Only regular files: opening a FIFO would block forever.
        if entry['type'] != 'file' or 'error' in entry:
            passthrough(entry)
            continue
        batch.append((abs_path, entry))
        size += entry['size']
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def scan_tree(root, hash_name=DEFAULT_HASH, exclude=None, workers=None):
    """Yield the entries of ``root`` (unordered), hashing regular files in parallel.

    hashlib releases the GIL on large updates, so threads use several cores.
    At most ``2 * workers`` batches are in flight, which bounds memory.
    """
    check_hash_name(hash_name)
    walk = walk_tree(root, exclude)
    if hash_name == 'none':
        for _abs_path, entry in walk:
            yield entry
        return
    workers = workers or os.cpu_count() or 1
    ready = collections.deque()
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in _batches(walk, ready.append):
            pending.append(pool.submit(_hash_batch, batch, hash_name))
            if len(pending) >= 2 * workers:
                ready.extend(pending.popleft().result())
            while ready:
                yield ready.popleft()
        for future in pending:
            ready.extend(future.result())
        while ready:
            yield ready.popleft()


# ---------------------------------------------------------------- sorting

def _entry_key(line):
    return path_key(json.loads(line)['path'])


def _spill(batch, tmp_dir):
    """Write a sorted batch of ``(key, line)`` to an anonymous temp file."""
    batch.sort()
    chunk = tempfile.TemporaryFile(dir=tmp_dir)
    chunk.writelines(line for _key, line in batch)
    chunk.seek(0)
    return chunk


def _read_chunk(chunk):
    for line in chunk:
        yield _entry_key(line), line


def sorted_lines(entries, chunk_size=CHUNK_SIZE, tmp_dir=None):
    """Yield the entries as JSON lines sorted by path bytes.

    Up to ``chunk_size`` entries are sorted in memory; beyond that, sorted
    chunks go to temporary files in ``tmp_dir`` and are merged with heapq.
    """
    chunks = []
    batch = []
    try:
        for entry in entries:
            batch.append((path_key(entry['path']), dump_line(entry)))
            if len(batch) >= chunk_size:
                chunks.append(_spill(batch, tmp_dir))
                batch = []
        batch.sort()
        # Paths are unique, so tuples never compare the lines themselves.
        streams = [_read_chunk(c) for c in chunks] + [iter(batch)]
        for _key, line in heapq.merge(*streams):
            yield line
    finally:
        for chunk in chunks:
            chunk.close()


# ---------------------------------------------------------------- writing

def new_stats():
    return {'entries': 0, 'counts': {'file': 0, 'dir': 0, 'symlink': 0, 'other': 0}, 'errors': 0, 'bytes': 0}


def _counted(entries, stats):
    for entry in entries:
        stats['entries'] += 1
        stats['counts'][entry['type']] += 1
        if 'error' in entry:
            stats['errors'] += 1
        if entry['type'] == 'file':
            stats['bytes'] += entry['size']
        yield entry


def make_header(root, hash_name, exclude):
    return {
        'manifest': MANIFEST_VERSION,
        'root': root if isinstance(root, str) else decode_path(root),
        'hash': hash_name,
        'exclude': list(exclude or ()),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_manifest(root, dest, hash_name=DEFAULT_HASH, exclude=None, chunk_size=CHUNK_SIZE, workers=None):
    """Scan ``root`` and write its sorted manifest to ``dest``; return stats.

    ``dest`` is replaced atomically. Temporary files (the partial manifest and
    sort chunks) go next to ``dest``: node-local /tmp is often too small.
    Stats: ``entries``, ``counts`` per type, ``errors``, ``bytes`` (files).
    """
    check_hash_name(hash_name)
    stats = new_stats()
    dest_dir = os.path.dirname(os.path.abspath(dest))
    fd, tmp_path = tempfile.mkstemp(prefix='.%s.' % os.path.basename(dest), suffix='.tmp', dir=dest_dir)
    try:
        with os.fdopen(fd, 'wb') as out:
            # mkstemp makes 0600; give the manifest the mode a plain open() would.
            os.fchmod(out.fileno(), 0o666 & ~_current_umask())
            out.write(dump_line(make_header(root, hash_name, exclude)))
            entries = _counted(scan_tree(root, hash_name, exclude, workers), stats)
            out.writelines(sorted_lines(entries, chunk_size, dest_dir))
        os.replace(tmp_path, dest)
    except BaseException:
        os.unlink(tmp_path)
        raise
    return stats


# ---------------------------------------------------------------- reading

class ManifestReader(object):
    """Stream a manifest: ``.header``, then iterate ``(key, entry)`` in order.

    Checks the order while reading, so an unsorted or hand-edited manifest
    fails loudly instead of producing a wrong comparison.
    """

    def __init__(self, path):
        self.path = path
        self.entries = 0
        self.errors = 0
        self._fh = open(path, 'rb')
        try:
            self.header = self._parse_header()
        except BaseException:
            self._fh.close()
            raise

    def _fail(self, lineno, why):
        raise ManifestError('%s line %d: %s' % (self.path, lineno, why))

    def _parse(self, line, lineno):
        try:
            obj = json.loads(line)
        except ValueError as exc:
            self._fail(lineno, 'invalid JSON (%s)' % exc)
        if not isinstance(obj, dict):
            self._fail(lineno, 'not a JSON object')
        return obj

    def _parse_header(self):
        line = self._fh.readline()
        if not line:
            self._fail(1, 'empty file, not a manifest')
        header = self._parse(line, 1)
        if header.get('manifest') != MANIFEST_VERSION:
            self._fail(1, 'not a manifest header (expected "manifest": %d)' % MANIFEST_VERSION)
        return header

    def __iter__(self):
        previous = None
        for lineno, line in enumerate(self._fh, start=2):
            entry = self._parse(line, lineno)
            if not isinstance(entry.get('path'), str) or 'type' not in entry:
                self._fail(lineno, 'entry without "path" or "type"')
            key = path_key(entry['path'])
            if previous is not None and key <= previous:
                self._fail(lineno, 'entries not sorted by path or duplicated')
            previous = key
            self.entries += 1
            if 'error' in entry:
                self.errors += 1
            yield key, entry

    def close(self):
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ---------------------------------------------------------------- comparing

def _aligned(src, dst):
    """Merge two sorted ``(key, entry)`` streams into ``(src_entry, dst_entry)``; None when absent."""
    s = next(src, None)
    d = next(dst, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s[0] < d[0]):
            yield s[1], None
            s = next(src, None)
        elif s is None or d[0] < s[0]:
            yield None, d[1]
            d = next(dst, None)
        else:
            yield s[1], d[1]
            s = next(src, None)
            d = next(dst, None)


def _entry_diffs(src, dst, checks, mtime_tolerance, compare_content):
    """Yield ``(category, source_value, destination_value)`` for one path present on both sides."""
    if src['type'] != dst['type']:
        if 'type' in checks:
            yield 'type', src['type'], dst['type']
        return  # size, mode... of a file against a dir mean nothing
    kind = src['type']
    # Directory sizes and mtimes depend on the file system and on sync order.
    if kind == 'file':
        if 'size' in checks and src.get('size') != dst.get('size'):
            yield 'size', src.get('size'), dst.get('size')
        if compare_content and 'hash' in src and 'hash' in dst and src['hash'] != dst['hash']:
            yield 'content', src['hash'], dst['hash']
        if 'mtime' in checks and 'mtime' in src and 'mtime' in dst \
                and abs(src['mtime'] - dst['mtime']) > mtime_tolerance:
            yield 'mtime', src['mtime'], dst['mtime']
    if kind == 'symlink':
        if 'symlink_target' in checks and src.get('target') != dst.get('target'):
            yield 'symlink_target', src.get('target'), dst.get('target')
    # Symlink permission bits are meaningless on Linux (always 0777).
    elif 'mode' in checks and src.get('mode') != dst.get('mode'):
        yield 'mode', src.get('mode'), dst.get('mode')


def iter_differences(src_entries, dst_entries, checks=ALL_CHECKS, mtime_tolerance=1.0, compare_content=True):
    """Yield difference dicts ``{path, category, source, destination}`` in path order.

    ``src_entries`` and ``dst_entries`` are iterables of ``(key, entry)``
    sorted by key, such as ManifestReader objects.
    """
    for src, dst in _aligned(iter(src_entries), iter(dst_entries)):
        if dst is None:
            if 'missing' in checks:
                yield {'path': src['path'], 'category': 'missing', 'source': src['type'], 'destination': None}
        elif src is None:
            if 'extra' in checks:
                yield {'path': dst['path'], 'category': 'extra', 'source': None, 'destination': dst['type']}
        else:
            for category, src_value, dst_value in _entry_diffs(src, dst, checks, mtime_tolerance, compare_content):
                yield {'path': src['path'], 'category': category, 'source': src_value, 'destination': dst_value}


def _content_comparable(src_header, dst_header, warnings):
    algorithms = (src_header.get('hash'), dst_header.get('hash'))
    if 'none' in algorithms or None in algorithms:
        warnings.append('content not compared: a manifest has no hashes (hash: none)')
        return False
    if algorithms[0] != algorithms[1]:
        warnings.append('content not compared: hash algorithms differ (%s vs %s)' % algorithms)
        return False
    return True


def validate_checks(checks):
    unknown = sorted(set(checks) - set(ALL_CHECKS))
    if unknown:
        raise ValueError('unknown checks: %s (valid: %s)' % (', '.join(unknown), ', '.join(ALL_CHECKS)))
    return frozenset(checks)


def compare_manifests(src_path, dst_path, checks=ALL_CHECKS, mtime_tolerance=1.0, max_examples=20, report=None):
    """Merge-compare two manifest files; stream every difference to ``report`` if given.

    Returns ``differences`` (total), ``counts`` per enabled category, the first
    ``max_examples`` difference dicts as ``examples``, ``source_entries``,
    ``destination_entries``, ``source_errors``, ``destination_errors`` (entries
    carrying ``error``), ``in_sync`` and ``warnings`` (list of text).
    Raises ManifestError on an invalid manifest, OSError when unreadable.
    """
    checks = validate_checks(checks)
    result = {'differences': 0, 'counts': dict((c, 0) for c in ALL_CHECKS if c in checks),
              'examples': [], 'warnings': []}
    with ManifestReader(src_path) as src, ManifestReader(dst_path) as dst:
        compare_content = 'content' in checks and _content_comparable(src.header, dst.header, result['warnings'])
        out = open(report, 'wb') if report else None
        try:
            for diff in iter_differences(src, dst, checks, mtime_tolerance, compare_content):
                result['differences'] += 1
                result['counts'][diff['category']] += 1
                if len(result['examples']) < max_examples:
                    result['examples'].append(diff)
                if out is not None:
                    out.write(dump_line(diff))
        finally:
            if out is not None:
                out.close()
        result.update(source_entries=src.entries, destination_entries=dst.entries,
                      source_errors=src.errors, destination_errors=dst.errors)
    result['in_sync'] = result['differences'] == 0
    return result

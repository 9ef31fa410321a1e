# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tree manifests: walk a directory tree, write a sorted manifest, compare two.

Trees may hold many millions of entries, so everything streams: the walk is an
iterative generator, more than ``chunk_size`` entries are sorted in chunks
spilled to temporary files and merged, and two manifests are compared with one
merge pass that holds one entry of each side, plus the chain of their parent
directories, in memory.

Manifest format (JSON lines, ASCII only)::

    {"hash": "xxh3", "manifest": 2, "mode": "content", "root": "/data", "started": 1700000000.1, ...}
    {"ctime": 1700000000.5, "hash": "...", "mode": 420, "mtime": 1700000000.5, "path": "a/b.txt",
     "size": 12, "type": "file"}

* The first line is the header; every following line is one entry, in tree
  order: sorted by the raw bytes of ``path`` with ``/`` sorting before any
  other byte, so a directory is followed at once by everything below it (the
  root itself is not an entry).
* Paths are bytes on disk. They are decoded as UTF-8 with ``surrogateescape``
  (bytes that are not valid UTF-8 become lone surrogates U+DC80..U+DCFF) and
  written with ``ensure_ascii`` JSON, so a name such as ``b"\\xff\\n"`` is
  stored as ``"\\udcff\\n"``. Python's ``json`` restores it exactly and
  ``path.encode("utf-8", "surrogateescape")`` gives the original bytes back.
  Newlines in names are JSON escaped, so one entry is always one line.
  Symlink targets are encoded the same way.
* ``type`` is ``file``, ``dir``, ``symlink`` or ``other`` (FIFO, socket,
  device). ``size``, ``mtime``, ``ctime`` (float seconds) and ``mode``
  (permission bits, ``stat.S_IMODE``) come from ``lstat``. Symlinks carry
  ``target``; regular files carry ``hash`` (hex digest) when they were hashed
  (every file in ``content`` mode, the sampled ones in ``sample`` mode, none in
  ``metadata`` mode). An entry that could not be fully read carries ``error``
  (for example ``"EACCES: Permission denied"``) and lacks what could not be
  read.
* The header's ``started`` (epoch seconds) is when the scan began; the
  comparison uses it to tell entries still in flight.
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
import sys
import tempfile
import time

MANIFEST_VERSION = 2
MODES = ('metadata', 'content', 'sample')
# Fast non-cryptographic first; the hashlib ones are always there.
HASH_CHOICES = ('xxh3', 'blake3', 'blake2b', 'md5', 'sha256')
DEFAULT_HASH = 'xxh3'
DEFAULT_FALLBACK = 'blake2b'
_HASH_LIBRARIES = {'xxh3': 'xxhash', 'blake3': 'blake3'}
# Entries held in memory before a sorted chunk is spilled to a temporary file.
CHUNK_SIZE = 100000
ALL_CHECKS = ('missing', 'extra', 'type', 'size', 'content', 'symlink_target', 'mode', 'mtime', 'unreadable')
# Differences the mirror flow repairs by posting the source path again.
REPOST_CATEGORIES = ('missing', 'type', 'size', 'content', 'symlink_target', 'mode', 'mtime')
# Of those, the ones of a file present on both sides: sr3's copier (timeCopy) overwrites an existing
# file only with a newer one, so the repair first marks the destination copy stale (mtime 0).
STALE_CATEGORIES = ('size', 'content', 'mtime', 'mode')
_READ_SIZE = 1024 * 1024
# Files per hashing task, or fewer when they add up to _BATCH_BYTES.
_BATCH_FILES = 256
_BATCH_BYTES = 64 * 1024 * 1024
_SEP = b'/'
_SEP_KEY = b'\x00'  # never in a file name, so it sorts a directory's contents right after it


class ManifestError(Exception):
    """A manifest file is not a valid manifest."""


class HashUnavailable(ValueError):
    """The hash algorithm needs a Python package this interpreter lacks."""


# ---------------------------------------------------------------- encoding

def decode_path(raw):
    """Bytes path -> text that round-trips any bytes (see module docstring)."""
    return raw.decode('utf-8', 'surrogateescape')


def path_bytes(text):
    """Encoded path -> its original bytes."""
    return text.encode('utf-8', 'surrogateescape')


def path_key(text):
    """Sort key of an encoded path: its bytes, ``/`` sorting first (tree order)."""
    return path_bytes(text).replace(_SEP, _SEP_KEY)


def printable(text):
    """Encoded path -> readable text with undecodable bytes shown as ``\\xNN``.

    For module results, which must be valid Unicode; the manifest and report
    files keep the exact encoding.
    """
    return path_bytes(text).decode('utf-8', 'backslashreplace')


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(',', ':'))


_DECODE = json.JSONDecoder().decode


def dump_line(obj):
    """One JSON line (bytes); ensure_ascii keeps lone surrogates and newlines escaped."""
    return _ENCODER.encode(obj).encode('ascii') + b'\n'


def load_line(line):
    """Parse one JSON line (bytes). Lines are ASCII, so skip json.loads' encoding detection."""
    return _DECODE(line.decode('utf-8'))


def _error_text(exc):
    name = errno.errorcode.get(exc.errno, type(exc).__name__)
    return '%s: %s' % (name, exc.strerror or exc)


# ---------------------------------------------------------------- selecting

def compile_excludes(patterns):
    """Compile exclude or reject regexes."""
    return [re.compile(p) for p in patterns or ()]


def reject_url_base(source_root, base_url='file:/'):
    """What sr3 prefixes a relative path with before matching reject patterns.

    The flow posts absolute source paths under ``post_baseUrl`` (``file:/``,
    or ``sftp://user@host/``), and sr3 matches its ``reject`` regexes with
    ``re.match`` against ``baseUrl`` + path: for file:/ that is
    ``file:/<absolute source path>``.
    """
    return base_url.rstrip('/') + '/' + os.path.normpath(source_root).strip('/') + '/'


class Selector(object):
    """Which entries a manifest leaves out.

    ``exclude``: regexes searched (``re.search``) in the relative path; a
    matching directory is left out with everything below it.
    ``reject``: sr3 ``reject`` regexes, matched as the copier matches them:
    ``re.match`` against ``reject_base`` + relative path (see
    reject_url_base). Like the copier, this leaves out the matching entry
    only, never what lies below a matching directory.
    """

    def __init__(self, exclude=None, reject=None, reject_base=''):
        self.exclude = compile_excludes(exclude)
        self.reject = compile_excludes(reject)
        self.reject_base = reject_base or ''

    def excluded(self, rel):
        return any(p.search(rel) for p in self.exclude)

    def rejected(self, rel):
        if not self.reject:
            return False
        url = self.reject_base + rel
        return any(p.match(url) for p in self.reject)


# ---------------------------------------------------------------- walking

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
        'ctime': st.st_ctime,
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


def walk_tree(root, selector=None):
    """Yield ``(abs_path_bytes, entry)`` for everything below ``root``, unordered.

    Iterative depth-first walk with ``os.scandir`` on bytes paths; symlinks are
    never followed, so symlink loops are harmless. A directory's entry is
    yielded after its listing, so a listing failure is recorded in its
    ``error``. Failing to list ``root`` itself raises OSError.
    """
    selector = selector or Selector()
    root_b = os.fsencode(root)
    stack = [(b'', None)]
    while stack:
        rel_dir, dir_entry = stack.pop()
        abs_dir = os.path.join(root_b, rel_dir) if rel_dir else root_b
        try:
            with os.scandir(abs_dir) as listing:
                for child in listing:
                    rel_b = rel_dir + _SEP + child.name if rel_dir else child.name
                    rel = decode_path(rel_b)
                    if selector.excluded(rel):
                        continue
                    entry = _child_entry(rel, child)
                    if entry is None:
                        continue
                    if selector.rejected(rel):
                        # Left out, but what lies below is not (sr3 matches each path alone).
                        if entry['type'] == 'dir':
                            stack.append((rel_b, {'rejected': True}))
                        continue
                    if entry['type'] == 'dir':
                        stack.append((rel_b, entry))
                    else:
                        yield child.path, entry
        except OSError as exc:
            if dir_entry is None:
                raise
            dir_entry['error'] = _error_text(exc)
        if dir_entry is not None and 'rejected' not in dir_entry:
            yield abs_dir, dir_entry


# ---------------------------------------------------------------- hashing

def new_hash(name):
    """Hash object for ``name``.

    Raises HashUnavailable when its library is not installed for this Python,
    ValueError when the name is unknown or hashlib refuses it (FIPS md5).
    """
    if name not in HASH_CHOICES:
        raise ValueError('unsupported hash algorithm: %s (valid: %s)' % (name, ', '.join(HASH_CHOICES)))
    if name in _HASH_LIBRARIES:
        library = _HASH_LIBRARIES[name]
        try:
            module = __import__(library)
        except ImportError:
            raise HashUnavailable('hash %s needs the Python package %s, which %s cannot import'
                                  % (name, library, sys.executable))
        return module.xxh3_128() if name == 'xxh3' else module.blake3()
    return hashlib.new(name)


def check_hash_name(name):
    """Raise ValueError (HashUnavailable) unless ``name`` is usable here."""
    new_hash(name)


def choose_hash(name, fallback=None):
    """Return ``(algorithm, warning)``: ``name``, or ``fallback`` when its library is missing.

    Raises HashUnavailable when there is no usable fallback.
    """
    try:
        check_hash_name(name)
        return name, None
    except HashUnavailable as exc:
        if not fallback or fallback == name:
            raise
        check_hash_name(fallback)
        return fallback, '%s; falling back to %s' % (exc, fallback)


def _open_regular(abs_path):
    """Open for reading, without following or blocking on what replaced the file since its lstat.

    The tree changes under our feet: a file may have become a symlink or a FIFO.
    Returns a file descriptor.
    """
    fd = os.open(abs_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, 'no longer a regular file')
    return fd


def hash_file(abs_path, name):
    """Hex digest of a file's content, read in 1 MiB blocks (plain os.read: most files are small)."""
    digest = new_hash(name)
    fd = _open_regular(abs_path)
    try:
        while True:
            block = os.read(fd, _READ_SIZE)
            if not block:
                break
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _add_hash(abs_path, entry, name):
    try:
        entry['hash'] = hash_file(abs_path, name)
    except OSError as exc:
        entry['error'] = _error_text(exc)
    return entry


def _hash_batch(batch, name):
    return [_add_hash(abs_path, entry, name) for abs_path, entry in batch]


def _batches(walk, passthrough, wanted):
    """Group the regular files of ``walk`` that ``wanted(entry)`` into batches of ``(abs_path, entry)``.

    Batches hold up to _BATCH_FILES files or _BATCH_BYTES bytes: one thread
    task per small file would cost more than hashing it. Other entries are
    handed to ``passthrough`` at once.
    """
    batch, size = [], 0
    for abs_path, entry in walk:
        # Only regular files: opening a FIFO would block forever.
        if entry['type'] != 'file' or 'error' in entry or not wanted(entry):
            passthrough(entry)
            continue
        batch.append((abs_path, entry))
        size += entry['size']
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def hashed_in_parallel(walk, hash_name, wanted=None, workers=None):
    """Yield the entries of ``walk`` (``(abs_path, entry)`` pairs), hashing the wanted files.

    Batches of files are hashed by ``workers`` threads. xxhash, blake3 and
    hashlib release the GIL while they digest a block, so the threads use
    several cores and overlap their reads. At most ``2 * workers`` batches
    are in flight, which bounds memory.
    """
    wanted = wanted or (lambda entry: True)
    workers = workers or os.cpu_count() or 1
    ready = collections.deque()
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in _batches(walk, ready.append, wanted):
            pending.append(pool.submit(_hash_batch, batch, hash_name))
            if len(pending) >= 2 * workers:
                ready.extend(pending.popleft().result())
            while ready:
                yield ready.popleft()
        for future in pending:
            ready.extend(future.result())
        while ready:
            yield ready.popleft()


class Sampler(object):
    """Deterministic random choice of files by path, the same on both sides of a mirror.

    A file's score is a keyed hash of its path (key: ``seed``), uniform in
    [0, 1). With ``fraction`` the files scoring below it are chosen; with
    ``count`` the ``count`` lowest scores (a bottom-k sketch, memory O(count)).
    Two hosts given the same seed choose the same paths, so their hashes can
    be compared; a new seed per audit run samples other files.
    """

    def __init__(self, fraction=None, count=None, seed=''):
        if (fraction is None) == (count is None):
            raise ValueError('sample needs exactly one of fraction or count')
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError('sample fraction must be in (0, 1], got %s' % fraction)
        if count is not None and count < 1:
            raise ValueError('sample count must be 1 or more, got %s' % count)
        self.fraction = fraction
        self.count = count
        self.key = hashlib.blake2b(seed.encode('utf-8')).digest()[:16]
        self._heap = []  # (-score, path, abs_path): the count best so far

    def score(self, rel):
        digest = hashlib.blake2b(path_bytes(rel), digest_size=8, key=self.key).digest()
        return int.from_bytes(digest, 'big') / 2.0 ** 64

    def wanted(self, entry):
        return self.score(entry['path']) < self.fraction

    def offer(self, abs_path, entry):
        """Count mode: consider one file for the sample."""
        item = (-self.score(entry['path']), entry['path'], abs_path)
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def chosen(self):
        """Count mode: ``(abs_path, path)`` of the chosen files."""
        return [(abs_path, rel) for _score, rel, abs_path in self._heap]


# ---------------------------------------------------------------- sorting

def _entry_key(line):
    return path_key(load_line(line)['path'])


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
    """Yield ``(key, line)``: the entries as JSON lines in tree order.

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
        yield from heapq.merge(*streams)
    finally:
        for chunk in chunks:
            chunk.close()


# ---------------------------------------------------------------- writing

def new_stats():
    return {'entries': 0, 'counts': {'file': 0, 'dir': 0, 'symlink': 0, 'other': 0},
            'errors': 0, 'bytes': 0, 'hashed_files': 0, 'hashed_bytes': 0}


def _counted(entries, stats):
    for entry in entries:
        stats['entries'] += 1
        stats['counts'][entry['type']] += 1
        if 'error' in entry:
            stats['errors'] += 1
        if entry['type'] == 'file':
            stats['bytes'] += entry['size']
        yield entry


def make_header(root, mode, hash_name, selector, sample=None):
    header = {
        'manifest': MANIFEST_VERSION,
        'root': root if isinstance(root, str) else decode_path(root),
        'mode': mode,
        'hash': hash_name if mode != 'metadata' else 'none',
        'exclude': [p.pattern for p in selector.exclude],
        'reject': [p.pattern for p in selector.reject],
        'reject_base': selector.reject_base,
        'started': time.time(),
        'root_changed': _changed_time(root),
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    if sample is not None:
        header['sample'] = {'fraction': sample.fraction, 'count': sample.count}
    return header


def _changed_time(path):
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return max(st.st_mtime, st.st_ctime)


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _scan(root, mode, hash_name, selector, sampler, workers):
    """Unordered entries of ``root`` for ``mode``."""
    walk = walk_tree(root, selector)
    if mode == 'metadata':
        return (entry for _abs_path, entry in walk)
    if mode == 'sample' and sampler.count is not None:
        def offered():
            for abs_path, entry in walk:
                if entry['type'] == 'file' and 'error' not in entry:
                    sampler.offer(abs_path, entry)
                yield entry
        return offered()
    wanted = sampler.wanted if mode == 'sample' else None
    return hashed_in_parallel(walk, hash_name, wanted, workers)


def _count_hashes(entries, stats):
    for entry in entries:
        if 'hash' in entry:
            stats['hashed_files'] += 1
            stats['hashed_bytes'] += entry['size']
        yield entry


def _hash_chosen(sampler, hash_name, workers):
    """Count mode: hash the chosen files after the walk; ``{key: (hash or None, error or None)}``."""
    walk = ((abs_path, {'path': rel, 'type': 'file', 'size': 0}) for abs_path, rel in sampler.chosen())
    done = {}
    for entry in hashed_in_parallel(walk, hash_name, None, workers):
        done[path_key(entry['path'])] = (entry.get('hash'), entry.get('error'))
    return done


def _patched(lines, sampler, hash_name, workers, stats):
    """Count mode: add the hashes of the chosen files to their lines.

    The sort has consumed the whole walk when it yields its first line, so
    the sample is known by then.
    """
    hashes = None
    for key, line in lines:
        if hashes is None:
            hashes = _hash_chosen(sampler, hash_name, workers)
        if key in hashes:
            entry = load_line(line)
            digest, error = hashes[key]
            if digest is not None:
                entry['hash'] = digest
                stats['hashed_files'] += 1
                stats['hashed_bytes'] += entry['size']
            else:
                entry['error'] = error
                stats['errors'] += 1
            line = dump_line(entry)
        yield line


def write_manifest(root, dest, mode='content', hash_name=DEFAULT_HASH, exclude=None, reject=None,
                   reject_base='', sample_fraction=None, sample_count=None, sample_seed='',
                   chunk_size=CHUNK_SIZE, workers=None):
    """Scan ``root`` and write its manifest in tree order to ``dest``; return stats.

    ``mode``: ``metadata`` reads no file content; ``content`` hashes every
    regular file with ``hash_name``; ``sample`` hashes a deterministic random
    sample (``sample_fraction`` or ``sample_count``, ``sample_seed``; see
    Sampler). ``exclude``, ``reject`` and ``reject_base``: see Selector.
    ``dest`` is replaced atomically. Temporary files (the partial manifest and
    sort chunks) go next to ``dest``: node-local /tmp is often too small.
    Stats: ``entries``, ``counts`` per type, ``errors``, ``bytes`` (files),
    ``hashed_files``, ``hashed_bytes``.
    """
    if mode not in MODES:
        raise ValueError('unknown mode: %s (valid: %s)' % (mode, ', '.join(MODES)))
    if mode != 'metadata':
        check_hash_name(hash_name)
    sampler = Sampler(sample_fraction, sample_count, sample_seed) if mode == 'sample' else None
    selector = Selector(exclude, reject, reject_base)
    stats = new_stats()
    dest_dir = os.path.dirname(os.path.abspath(dest))
    fd, tmp_path = tempfile.mkstemp(prefix='.%s.' % os.path.basename(dest), suffix='.tmp', dir=dest_dir)
    try:
        with os.fdopen(fd, 'wb') as out:
            # mkstemp makes 0600; give the manifest the mode a plain open() would.
            os.fchmod(out.fileno(), 0o666 & ~_current_umask())
            out.write(dump_line(make_header(root, mode, hash_name, selector, sampler)))
            entries = _scan(root, mode, hash_name, selector, sampler, workers)
            lines = sorted_lines(_count_hashes(_counted(entries, stats), stats), chunk_size, dest_dir)
            if sampler is not None and sampler.count is not None:
                out.writelines(_patched(lines, sampler, hash_name, workers, stats))
            else:
                out.writelines(line for _key, line in lines)
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
            obj = load_line(line)
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
                self._fail(lineno, 'entries not in tree order or duplicated')
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
    """Merge two sorted ``(key, entry)`` streams into ``(key, src_entry, dst_entry)``; None when absent."""
    s = next(src, None)
    d = next(dst, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s[0] < d[0]):
            yield s[0], s[1], None
            s = next(src, None)
        elif s is None or d[0] < s[0]:
            yield d[0], None, d[1]
            d = next(dst, None)
        else:
            yield s[0], s[1], d[1]
            s = next(src, None)
            d = next(dst, None)


def _entry_diffs(src, dst, checks, mtime_tolerance, compare_content):
    """Yield ``(category, source_value, destination_value)`` for one path present on both sides."""
    if 'unreadable' in checks and ('error' in src or 'error' in dst):
        yield 'unreadable', src.get('error'), dst.get('error')
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


def _path_diffs(src, dst, checks, mtime_tolerance, compare_content):
    """All ``(category, source_value, destination_value)`` of one path."""
    if dst is None:
        if 'missing' in checks:
            yield 'missing', src['type'], None
        if 'unreadable' in checks and 'error' in src:
            yield 'unreadable', src['error'], None
    elif src is None:
        if 'extra' in checks:
            yield 'extra', None, dst['type']
        if 'unreadable' in checks and 'error' in dst:
            yield 'unreadable', None, dst['error']
    else:
        yield from _entry_diffs(src, dst, checks, mtime_tolerance, compare_content)


def _changed(entry):
    """When an entry last changed (content, metadata or name): max of mtime and ctime."""
    return max(entry.get('mtime') or 0, entry.get('ctime') or 0)


class InFlight(object):
    """Tell differences that the mirror may still be fixing.

    With ``settle`` seconds, a path is in flight when it changed (mtime or
    ctime) less than ``settle`` seconds before its side's scan started, on
    either side, and also:

    * missing on the destination, when a source directory above it that the
      destination lacks too changed lately (a directory created or moved in);
    * extra on the destination, when its nearest directory that exists on
      the source changed lately (something deleted or moved away there).
    """

    def __init__(self, settle, src_header, dst_header):
        self.enabled = bool(settle) and 'started' in src_header and 'started' in dst_header
        if self.enabled:
            self.src_limit = src_header['started'] - settle
            self.dst_limit = dst_header['started'] - settle
            self.src_root_recent = (src_header.get('root_changed') or 0) >= self.src_limit

    def _src_recent(self, entry):
        return _changed(entry) >= self.src_limit

    def _dst_recent(self, entry):
        return _changed(entry) >= self.dst_limit

    def __call__(self, src, dst, ancestors):
        """``ancestors``: ``(key, src_entry, dst_entry)`` of the directories above, outermost first."""
        if not self.enabled:
            return False
        if (src is not None and self._src_recent(src)) or (dst is not None and self._dst_recent(dst)):
            return True
        if dst is None:
            for _key, anc_src, anc_dst in reversed(ancestors):
                if anc_dst is not None:
                    break
                if anc_src is not None and self._src_recent(anc_src):
                    return True
            return False
        if src is None:
            for _key, anc_src, _anc_dst in reversed(ancestors):
                if anc_src is not None:
                    return self._src_recent(anc_src)
            return self.src_root_recent
        return False


def _differences_with_entries(src_entries, dst_entries, checks, mtime_tolerance, compare_content, in_flight):
    """Yield ``(difference, source_entry, destination_entry)``; see iter_differences."""
    ancestors = []  # the directories above the current path: tree order keeps them on a stack
    for key, src, dst in _aligned(iter(src_entries), iter(dst_entries)):
        while ancestors and not key.startswith(ancestors[-1][0] + _SEP_KEY):
            ancestors.pop()
        diffs = list(_path_diffs(src, dst, checks, mtime_tolerance, compare_content))
        entry = src if src is not None else dst
        if diffs and in_flight is not None and in_flight(src, dst, ancestors):
            yield ({'path': entry['path'], 'category': 'in_flight', 'categories': [d[0] for d in diffs],
                    'source': None if src is None else src['type'],
                    'destination': None if dst is None else dst['type']}, src, dst)
        else:
            for category, src_value, dst_value in diffs:
                yield ({'path': entry['path'], 'category': category, 'source': src_value,
                        'destination': dst_value}, src, dst)
        if (src is not None and src['type'] == 'dir') or (dst is not None and dst['type'] == 'dir'):
            ancestors.append((key, src, dst))


def iter_differences(src_entries, dst_entries, checks=ALL_CHECKS, mtime_tolerance=1.0, compare_content=True,
                     in_flight=None):
    """Yield difference dicts ``{path, category, source, destination}`` in tree order.

    ``src_entries`` and ``dst_entries`` are iterables of ``(key, entry)``
    sorted by key, such as ManifestReader objects. A path ``in_flight`` (see
    InFlight) yields one ``{path, category: "in_flight", categories: [...]}``
    instead of its differences.
    """
    for diff, _src, _dst in _differences_with_entries(src_entries, dst_entries, checks, mtime_tolerance,
                                                      compare_content, in_flight):
        yield diff


def _content_comparable(src_header, dst_header, warnings):
    algorithms = (src_header.get('hash'), dst_header.get('hash'))
    if 'none' in algorithms or None in algorithms:
        warnings.append('content not compared: a manifest has no hashes (mode metadata)')
        return False
    if algorithms[0] != algorithms[1]:
        warnings.append('content not compared: hash algorithms differ (%s vs %s)' % algorithms)
        return False
    if src_header.get('sample') != dst_header.get('sample'):
        warnings.append('the two manifests sampled differently: content compared only where both hashed')
    return True


def validate_checks(checks):
    unknown = sorted(set(checks) - set(ALL_CHECKS))
    if unknown:
        raise ValueError('unknown checks: %s (valid: %s)' % (', '.join(unknown), ', '.join(ALL_CHECKS)))
    return frozenset(checks)


def _abs_bytes(root, rel):
    return os.path.join(os.fsencode(root), path_bytes(rel))


class _PathList(object):
    """NUL-separated absolute paths, each once (a path's differences come together)."""

    def __init__(self, path, root):
        self.root = root
        self.count = 0
        self._last = None
        self._fh = open(path, 'wb') if path else None

    def add(self, rel):
        if self._fh is None or rel == self._last:
            return
        self._last = rel
        self.count += 1
        self._fh.write(_abs_bytes(self.root, rel) + b'\0')

    def close(self):
        if self._fh is not None:
            self._fh.close()


def compare_manifests(src_path, dst_path, checks=ALL_CHECKS, mtime_tolerance=1.0, max_examples=20, report=None,
                      settle=0, repost_list=None, delete_list=None, stale_list=None):
    """Merge-compare two manifest files; stream every difference to ``report`` if given.

    Returns ``differences`` (total), ``counts`` per enabled category, the first
    ``max_examples`` difference dicts as ``examples``, ``in_flight`` (paths
    tolerated, see InFlight) with ``in_flight_examples``, ``source_entries``,
    ``destination_entries``, ``source_errors``, ``destination_errors`` (entries
    carrying ``error``), ``in_sync``, ``repost`` and ``delete`` (numbers of
    paths written to the lists) and ``warnings`` (list of text).

    ``repost_list`` receives the absolute source path of every path with a
    difference in REPOST_CATEGORIES, ``delete_list`` the absolute destination
    path of every extra, ``stale_list`` the absolute destination path of every
    regular file, on both sides, with a difference in STALE_CATEGORIES, all
    NUL-separated, for a repair.
    Raises ManifestError on an invalid manifest, OSError when unreadable.
    """
    checks = validate_checks(checks)
    result = {'differences': 0, 'counts': dict((c, 0) for c in ALL_CHECKS if c in checks),
              'examples': [], 'in_flight': 0, 'in_flight_examples': [], 'warnings': []}
    with ManifestReader(src_path) as src, ManifestReader(dst_path) as dst:
        compare_content = 'content' in checks and _content_comparable(src.header, dst.header, result['warnings'])
        in_flight = InFlight(settle, src.header, dst.header)
        if settle and not in_flight.enabled:
            result['warnings'].append('settle ignored: a manifest header lacks "started"')
        out = open(report, 'wb') if report else None
        repost = _PathList(repost_list, src.header.get('root', ''))
        delete = _PathList(delete_list, dst.header.get('root', ''))
        stale = _PathList(stale_list, dst.header.get('root', ''))
        try:
            differences = _differences_with_entries(src, dst, checks, mtime_tolerance, compare_content, in_flight)
            for diff, src_entry, dst_entry in differences:
                if diff['category'] == 'in_flight':
                    result['in_flight'] += 1
                    if len(result['in_flight_examples']) < max_examples:
                        result['in_flight_examples'].append(diff)
                else:
                    result['differences'] += 1
                    result['counts'][diff['category']] += 1
                    if len(result['examples']) < max_examples:
                        result['examples'].append(diff)
                    if diff['category'] in REPOST_CATEGORIES:
                        repost.add(diff['path'])
                    if diff['category'] in STALE_CATEGORIES and src_entry['type'] == dst_entry['type'] == 'file':
                        stale.add(diff['path'])
                    elif diff['category'] == 'extra':
                        delete.add(diff['path'])
                if out is not None:
                    out.write(dump_line(diff))
        finally:
            for stream in (out, repost, delete, stale):
                if stream is not None:
                    stream.close()
        result.update(source_entries=src.entries, destination_entries=dst.entries,
                      source_errors=src.errors, destination_errors=dst.errors,
                      repost=repost.count, delete=delete.count, stale=stale.count)
    result['in_sync'] = result['differences'] == 0
    return result

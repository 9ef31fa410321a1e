# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tree manifests: walk a directory tree, write a sorted manifest, compare two.

Trees may hold many millions of entries, so everything streams: the walk is
iterative and depth-first and lists each directory sorted by name, so the
entries come out in tree order with no sort of the whole tree (a directory of
more than ``chunk_size`` names is sorted in chunks spilled to temporary files
and merged), and two manifests are compared with one merge pass that holds one
entry of each side, plus the chain of their parent directories, in memory.
The walking process lists the directories; forked worker processes read the
other entries and hash the files, in runs of consecutive entries whose lines
are written in order (_write_parallel). Without a process pool the walk runs
in one process (tree_lines) and files are hashed in threads.

Manifest format (JSON lines, ASCII only)::

    {"hash": "xxh3", "manifest": 2, "mode": "content", "root": "/data", "started": 1700000000.1, ...}
    {"path":"a/b.txt","type":"file","size":12,"mode":420,"mtime":1700000000.5,"hash":"...",
     "ctime":1700000000.5}

* The first line is the header; every following line is one entry, in tree
  order: sorted by the raw bytes of ``path`` with ``/`` sorting before any
  other byte, so a directory is followed at once by everything below it (the
  root itself is not an entry). That is the order of a depth-first walk that
  takes the names of each directory in byte order.
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
* Readers take any JSON object per line. The writer puts ``path`` first and
  ``ctime`` last, without spaces, so that the comparison can take the path
  from the start of a line and pass over a path whose two lines are equal
  but for ``ctime`` (which no check compares) without parsing them.
* The header's ``started`` (epoch seconds) is when the scan began; the
  comparison uses it to tell entries still in flight.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import concurrent.futures
import datetime
import errno
import functools
import hashlib
import heapq
import itertools
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
# Names of one directory held in memory before a sorted chunk is spilled to a temporary file.
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
# Lines per write, and at most per hashing task.
_BATCH_LINES = 4096
# Read entries and hash files in forked worker processes (else in the walking process and threads),
# also in metadata mode.
_HASH_IN_PROCESSES = True
_PARALLEL_METADATA = True
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
# C versions when available: a JSON string literal (quoted, ASCII) of a text, and the scanner of one.
_ESCAPE = json.encoder.encode_basestring_ascii
_SCANSTRING = json.decoder.scanstring


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

# Open directories (for lstat/readlink relative to them) held at once along the current path;
# deeper directories are read by absolute path instead.
_MAX_DIR_FDS = 48
_DIR_FLAGS = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
_USE_DIR_FD = os.stat in os.supports_dir_fd and os.readlink in os.supports_dir_fd and os.open in os.supports_dir_fd
# Spilled name chunks are read back in blocks of this size.
_NAMES_BLOCK = 64 * 1024


def _read_names(chunk):
    """Names of a spilled chunk: NUL-separated (no name holds a NUL), read in blocks."""
    rest = b''
    while True:
        block = chunk.read(_NAMES_BLOCK)
        if not block:
            return
        names = (rest + block).split(b'\0')
        rest = names.pop()
        yield from names


def _merged(chunks, parse):
    try:
        yield from heapq.merge(*[parse(chunk) for chunk in chunks])
    finally:
        for chunk in chunks:
            chunk.close()


def _sorted_listing(abs_dir, item_of, record_of, parse, chunk_size, tmp_dir):
    """Iterator over ``item_of(entry)`` for the entries of ``abs_dir``, sorted.

    Up to ``chunk_size`` items are sorted in memory; a larger directory is
    sorted in chunks spilled to temporary files in ``tmp_dir`` (each item
    written as ``record_of(item)``, NUL-terminated, read back by ``parse``)
    and merged. Raises OSError when the directory cannot be listed.
    """
    with os.scandir(abs_dir) as listing:
        items = [item_of(child) for child in itertools.islice(listing, chunk_size)]
        if len(items) < chunk_size:
            items.sort()
            return iter(items)
        chunks = []
        try:
            while items:
                items.sort()
                chunk = tempfile.TemporaryFile(dir=tmp_dir)
                chunks.append(chunk)
                chunk.write(b''.join(record_of(item) + b'\0' for item in items))
                chunk.seek(0)
                items = [item_of(child) for child in itertools.islice(listing, chunk_size)]
        except BaseException:
            for chunk in chunks:
                chunk.close()
            raise
    return _merged(chunks, parse)


def _child_name(child):
    return child.name


def _same(name):
    return name


def sorted_names(abs_dir, chunk_size=CHUNK_SIZE, tmp_dir=None):
    """Iterator over the names (bytes) in directory ``abs_dir``, sorted by their bytes.

    Up to ``chunk_size`` names are sorted in memory; a larger directory is
    sorted in chunks spilled to temporary files in ``tmp_dir`` and merged.
    Raises OSError when the directory cannot be listed.
    """
    return _sorted_listing(abs_dir, _child_name, _same, _read_names, chunk_size, tmp_dir)


def new_stats():
    return {'entries': 0, 'counts': {'file': 0, 'dir': 0, 'symlink': 0, 'other': 0},
            'errors': 0, 'bytes': 0, 'hashed_files': 0, 'hashed_bytes': 0}


def _error_json(exc):
    return _ESCAPE(_error_text(exc))


def tree_lines(root, selector=None, split=None, stats=None, chunk_size=CHUNK_SIZE, tmp_dir=None):
    """Yield the manifest lines (text) of everything below ``root``, in tree order.

    Iterative depth-first walk: each directory is listed and sorted by name
    (sorted_names), its line comes before the lines of its content, so the
    lines come out in tree order and need no sort. Entries are read with
    ``lstat`` relative to an open descriptor of their directory; symlinks are
    never followed, so symlink loops are harmless. Failing to list ``root``
    itself raises OSError; any other failure is recorded in the entry's
    ``error``.

    ``split(rel)`` (``rel``: the encoded relative path) tells the regular
    files to hash: for those a tuple ``(head, tail, abs_path, size, rel)`` is
    yielded instead of a line, and the hash (or error) goes between ``head``
    and ``tail``. ``stats`` (see new_stats) is updated with the counts.
    """
    selector = selector or Selector()
    stats = stats if stats is not None else new_stats()
    excluded = selector.excluded if selector.exclude else None
    rejected = selector.rejected if selector.reject else None
    need_rel = excluded is not None or rejected is not None or split is not None
    escape = _ESCAPE
    lstat = os.lstat
    readlink = os.readlink
    s_isreg, s_isdir, s_islnk = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK
    n_file = n_dir = n_link = n_other = n_errors = n_bytes = 0
    root_b = os.fsencode(root)
    names = sorted_names(root_b, chunk_size, tmp_dir)
    fd = os.open(root_b, _DIR_FLAGS) if _USE_DIR_FD else None
    abs_slash = root_b if root_b.endswith(_SEP) else root_b + _SEP
    json_dir = '{"path":"'
    rel_dir = ''
    stack = []
    rel = None
    try:
        while True:
            name = next(names, None)
            if name is None:
                if fd is not None:
                    os.close(fd)
                    fd = None
                if not stack:
                    break
                names, fd, abs_slash, json_dir, rel_dir = stack.pop()
                continue
            text = name.decode('utf-8', 'surrogateescape')
            if need_rel:
                rel = rel_dir + text
                if excluded is not None and excluded(rel):
                    continue
            json_path = json_dir + escape(text)[1:-1]
            try:
                st = lstat(name, dir_fd=fd) if fd is not None else lstat(abs_slash + name)
            except FileNotFoundError:
                # Deleted between listing and lstat: normal in a live tree, not an error.
                continue
            except OSError as exc:
                if rejected is None or not rejected(rel):
                    n_other += 1
                    n_errors += 1
                    yield '%s","type":"other","error":%s}\n' % (json_path, _error_json(exc))
                continue
            mode = st.st_mode
            if s_isreg(mode):
                if rejected is not None and rejected(rel):
                    continue
                n_file += 1
                size = st.st_size
                n_bytes += size
                if split is not None and split(rel):
                    yield ('%s","type":"file","size":%d,"mode":%d,"mtime":%r'
                           % (json_path, size, mode & 0o7777, st.st_mtime),
                           ',"ctime":%r}\n' % st.st_ctime, abs_slash + name, size, rel)
                else:
                    yield ('%s","type":"file","size":%d,"mode":%d,"mtime":%r,"ctime":%r}\n'
                           % (json_path, size, mode & 0o7777, st.st_mtime, st.st_ctime))
            elif s_isdir(mode):
                is_rejected = rejected is not None and rejected(rel)
                abs_dir = abs_slash + name
                sub_fd = None
                try:
                    if fd is not None and len(stack) < _MAX_DIR_FDS:
                        sub_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    sub_names = sorted_names(abs_dir, chunk_size, tmp_dir)
                except OSError as exc:
                    if sub_fd is not None:
                        os.close(sub_fd)
                    if not is_rejected:
                        # Left out with what lies below when rejected, like any listing error.
                        n_dir += 1
                        n_errors += 1
                        yield ('%s","type":"dir","size":%d,"mode":%d,"mtime":%r,"error":%s,"ctime":%r}\n'
                               % (json_path, st.st_size, mode & 0o7777, st.st_mtime, _error_json(exc),
                                  st.st_ctime))
                    continue
                if not is_rejected:
                    # A rejected directory is left out, but what lies below is not (sr3 matches each path alone).
                    n_dir += 1
                    yield ('%s","type":"dir","size":%d,"mode":%d,"mtime":%r,"ctime":%r}\n'
                           % (json_path, st.st_size, mode & 0o7777, st.st_mtime, st.st_ctime))
                stack.append((names, fd, abs_slash, json_dir, rel_dir))
                names, fd, abs_slash, json_dir = sub_names, sub_fd, abs_dir + _SEP, json_path + '/'
                if need_rel:
                    rel_dir = rel + '/'
            elif s_islnk(mode):
                if rejected is not None and rejected(rel):
                    continue
                n_link += 1
                try:
                    target = readlink(name, dir_fd=fd) if fd is not None else readlink(abs_slash + name)
                except OSError as exc:
                    n_errors += 1
                    yield ('%s","type":"symlink","size":%d,"mode":%d,"mtime":%r,"error":%s,"ctime":%r}\n'
                           % (json_path, st.st_size, mode & 0o7777, st.st_mtime, _error_json(exc), st.st_ctime))
                else:
                    yield ('%s","type":"symlink","size":%d,"mode":%d,"mtime":%r,"target":%s,"ctime":%r}\n'
                           % (json_path, st.st_size, mode & 0o7777, st.st_mtime,
                              escape(target.decode('utf-8', 'surrogateescape')), st.st_ctime))
            else:
                if rejected is not None and rejected(rel):
                    continue
                n_other += 1
                yield ('%s","type":"other","size":%d,"mode":%d,"mtime":%r,"ctime":%r}\n'
                       % (json_path, st.st_size, mode & 0o7777, st.st_mtime, st.st_ctime))
    finally:
        if fd is not None:
            os.close(fd)
        for frame in stack:
            if frame[1] is not None:
                os.close(frame[1])
        counts = stats['counts']
        counts['file'] += n_file
        counts['dir'] += n_dir
        counts['symlink'] += n_link
        counts['other'] += n_other
        stats['entries'] += n_file + n_dir + n_link + n_other
        stats['errors'] += n_errors
        stats['bytes'] += n_bytes


# ---------------------------------------------------------------- hashing

_CONSTRUCTORS = {}


def new_hash(name):
    """Hash object for ``name``.

    Raises HashUnavailable when its library is not installed for this Python,
    ValueError when the name is unknown or hashlib refuses it (FIPS md5).
    """
    constructor = _CONSTRUCTORS.get(name)
    if constructor is not None:
        return constructor()
    if name not in HASH_CHOICES:
        raise ValueError('unsupported hash algorithm: %s (valid: %s)' % (name, ', '.join(HASH_CHOICES)))
    if name in _HASH_LIBRARIES:
        library = _HASH_LIBRARIES[name]
        try:
            module = __import__(library)
        except ImportError:
            raise HashUnavailable('hash %s needs the Python package %s, which %s cannot import'
                                  % (name, library, sys.executable))
        constructor = module.xxh3_128 if name == 'xxh3' else module.blake3
    else:
        hashlib.new(name)  # raises ValueError when refused (FIPS)
        constructor = functools.partial(hashlib.new, name)
    _CONSTRUCTORS[name] = constructor
    return constructor()


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
        block = os.read(fd, _READ_SIZE)
        while block:
            digest.update(block)
            block = os.read(fd, _READ_SIZE)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _add_hash(abs_path, entry, name):
    try:
        entry['hash'] = hash_file(abs_path, name)
    except OSError as exc:
        entry['error'] = _error_text(exc)
    return entry


def _hash_paths(paths, name):
    """Hash files: a list of hex digests, or of JSON error texts (starting with a quote) for failures."""
    results = []
    for abs_path in paths:
        try:
            results.append(hash_file(abs_path, name))
        except OSError as exc:
            results.append(_error_json(exc))
    return results


def _finish_lines(batch, digests, stats):
    """Bytes of a batch of tree_lines items, with the digests (_hash_paths) of its files."""
    lines = []
    digests = iter(digests)
    hashed = hashed_bytes = errors = 0
    for item in batch:
        if item.__class__ is not tuple:
            lines.append(item)
            continue
        digest = next(digests)
        if digest[0] == '"':
            errors += 1
            lines.append('%s,"error":%s%s' % (item[0], digest, item[1]))
        else:
            hashed += 1
            hashed_bytes += item[3]
            lines.append('%s,"hash":"%s"%s' % (item[0], digest, item[1]))
    stats['hashed_files'] += hashed
    stats['hashed_bytes'] += hashed_bytes
    stats['errors'] += errors
    return ''.join(lines).encode('ascii')


def _process_pool(workers):
    """A pool of ``workers`` forked processes, or None where there is none (no fork, no semaphores)."""
    try:
        import multiprocessing
        return multiprocessing.get_context('fork').Pool(workers)
    except (ImportError, ValueError, OSError):
        return None


class _ThreadPool(object):
    """The part of multiprocessing's Pool interface _write_hashed uses, with threads."""

    def __init__(self, workers):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers)

    def apply_async(self, function, args):
        future = self._executor.submit(function, *args)
        future.get = future.result
        return future

    def close(self):
        self._executor.shutdown(wait=False)

    def join(self):
        self._executor.shutdown(wait=True)

    def terminate(self):
        self._executor.shutdown(wait=True)


def _write_hashed(out, items, name, workers, stats):
    """Write tree_lines items to ``out`` in order, hashing their files in ``workers`` processes.

    Consecutive items go to one task until it holds _BATCH_FILES files,
    _BATCH_BYTES bytes of them, or _BATCH_LINES lines: one task per small file
    would cost more than hashing it. The tasks run in forked processes, so
    that opening, reading and hashing small files (Python work, under the GIL
    in one process) runs beside the walk on other cores; threads where
    processes cannot be made. At most ``2 * workers`` tasks are in flight,
    which bounds memory; their results are written in order.
    """
    workers = workers or os.cpu_count() or 1
    max_files, max_bytes, max_lines = _BATCH_FILES, _BATCH_BYTES, _BATCH_LINES
    pending = collections.deque()

    def done(task):
        batch, result = task
        out.write(_finish_lines(batch, result.get(), stats))

    def submit(batch):
        paths = [item[2] for item in batch if item.__class__ is tuple]
        pending.append((batch, pool.apply_async(_hash_paths, (paths, name))))

    pool = (_process_pool(workers) if _HASH_IN_PROCESSES else None) or _ThreadPool(workers)
    try:
        batch = []
        files = size = 0
        for item in items:
            batch.append(item)
            if item.__class__ is tuple:
                files += 1
                size += item[3]
            if files >= max_files or size >= max_bytes or len(batch) >= max_lines:
                if files or pending:
                    submit(batch)
                    while len(pending) >= 2 * workers:
                        done(pending.popleft())
                else:
                    out.write(''.join(batch).encode('ascii'))
                batch = []
                files = size = 0
        submit(batch)
        while pending:
            done(pending.popleft())
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _write_plain(out, lines):
    """Write tree_lines lines (no file to hash) in blocks."""
    while True:
        block = list(itertools.islice(lines, _BATCH_LINES))
        if not block:
            return
        out.write(''.join(block).encode('ascii'))


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
        self._heap = []  # (-score, path, abs_path, line): the count best so far

    def score(self, rel):
        digest = hashlib.blake2b(path_bytes(rel), digest_size=8, key=self.key).digest()
        return int.from_bytes(digest, 'big') / 2.0 ** 64

    def wanted(self, rel):
        """Fraction mode: whether the file at encoded relative path ``rel`` is hashed."""
        return self.score(rel) < self.fraction

    def offer(self, abs_path, rel, line=None):
        """Count mode: consider one file for the sample (``line``: where it is in the manifest)."""
        item = (-self.score(rel), rel, abs_path, line)
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def chosen(self):
        """Count mode: ``(abs_path, path, line)`` of the chosen files."""
        return [(abs_path, rel, line) for _score, rel, abs_path, line in self._heap]


# ---------------------------------------------------------------- parallel walk

def _read_children(chunk):
    for item in _read_names(chunk):
        name, flag = item.split(_SEP)
        yield name, flag == b'd'


def _is_dir_entry(child):
    """Whether a listed entry is a directory (d_type, or lstat where the file system gives no type)."""
    try:
        return child.is_dir(follow_symlinks=False)
    except OSError:
        return False  # the worker's lstat reports it


def sorted_children(abs_dir, chunk_size=CHUNK_SIZE, tmp_dir=None):
    """Like sorted_names, but ``(name, is_dir)``: whether the directory entry says it is a directory.

    ``is_dir`` comes from the listing (d_type) when the file system gives it,
    else from an lstat; symlinks are never directories here.
    """
    return _sorted_listing(abs_dir, _child_and_type, _child_record, _read_children, chunk_size, tmp_dir)


def _child_and_type(child):
    return child.name, _is_dir_entry(child)


def _child_record(item):
    name, is_dir = item
    return name + (b'/d' if is_dir else b'/f')


def _segments_lines(segments, selector, split, hash_name):
    """Task of the parallel walk: the lines of runs of consecutive entries.

    ``segments``: ``(abs_dir, json_dir, rel_dir, names, dir_errors)``, names
    of entries of one directory; ``dir_errors`` maps the names of the
    subdirectories the walk could not list to the JSON text of the error.
    Returns ``(bytes, counts)``, counts as _count_lines adds them up.
    """
    excluded = selector.excluded if selector.exclude else None
    rejected = selector.rejected if selector.reject else None
    need_rel = excluded is not None or rejected is not None or split is not None
    n_file = n_dir = n_link = n_other = n_errors = n_bytes = hashed = hashed_bytes = 0
    lines = []
    for abs_dir, json_dir, rel_dir, names, dir_errors in segments:
        counts = _segment_lines(lines, abs_dir, json_dir, rel_dir, names, dir_errors, excluded, rejected, need_rel,
                                split, hash_name)
        n_file += counts[0]
        n_dir += counts[1]
        n_link += counts[2]
        n_other += counts[3]
        n_errors += counts[4]
        n_bytes += counts[5]
        hashed += counts[6]
        hashed_bytes += counts[7]
    return ''.join(lines).encode('ascii'), (n_file, n_dir, n_link, n_other, n_errors, n_bytes, hashed, hashed_bytes)


def _segment_lines(lines, abs_dir, json_dir, rel_dir, names, dir_errors, excluded, rejected, need_rel, split,
                   hash_name):
    escape = _ESCAPE
    abs_slash = abs_dir if abs_dir.endswith(_SEP) else abs_dir + _SEP
    n_file = n_dir = n_link = n_other = n_errors = n_bytes = hashed = hashed_bytes = 0
    fd = None
    if _USE_DIR_FD:
        try:
            fd = os.open(abs_dir, _DIR_FLAGS)
        except OSError:
            fd = None
    rel = None
    try:
        for name in names:
            text = name.decode('utf-8', 'surrogateescape')
            if need_rel:
                rel = rel_dir + text
                if excluded is not None and excluded(rel):
                    continue
            json_path = json_dir + escape(text)[1:-1]
            try:
                st = os.lstat(name, dir_fd=fd) if fd is not None else os.lstat(abs_slash + name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if rejected is None or not rejected(rel):
                    n_other += 1
                    n_errors += 1
                    lines.append('%s","type":"other","error":%s}\n' % (json_path, _error_json(exc)))
                continue
            if rejected is not None and rejected(rel):
                continue
            mode = st.st_mode
            if stat.S_ISREG(mode):
                n_file += 1
                size = st.st_size
                n_bytes += size
                if split is not None and split(rel):
                    try:
                        digest = hash_file(abs_slash + name, hash_name)
                    except OSError as exc:
                        n_errors += 1
                        extra = ',"error":%s' % _error_json(exc)
                    else:
                        hashed += 1
                        hashed_bytes += size
                        extra = ',"hash":"%s"' % digest
                    lines.append('%s","type":"file","size":%d,"mode":%d,"mtime":%r%s,"ctime":%r}\n'
                                 % (json_path, size, mode & 0o7777, st.st_mtime, extra, st.st_ctime))
                else:
                    lines.append('%s","type":"file","size":%d,"mode":%d,"mtime":%r,"ctime":%r}\n'
                                 % (json_path, size, mode & 0o7777, st.st_mtime, st.st_ctime))
            elif stat.S_ISLNK(mode):
                n_link += 1
                try:
                    target = os.readlink(name, dir_fd=fd) if fd is not None else os.readlink(abs_slash + name)
                except OSError as exc:
                    n_errors += 1
                    lines.append('%s","type":"symlink","size":%d,"mode":%d,"mtime":%r,"error":%s,"ctime":%r}\n'
                                 % (json_path, st.st_size, mode & 0o7777, st.st_mtime, _error_json(exc),
                                    st.st_ctime))
                else:
                    lines.append('%s","type":"symlink","size":%d,"mode":%d,"mtime":%r,"target":%s,"ctime":%r}\n'
                                 % (json_path, st.st_size, mode & 0o7777, st.st_mtime,
                                    escape(target.decode('utf-8', 'surrogateescape')), st.st_ctime))
            elif stat.S_ISDIR(mode):
                # Listed (and descended into) by the walk, which tells its listing error.
                n_dir += 1
                error = dir_errors.get(name)
                if error is None:
                    lines.append('%s","type":"dir","size":%d,"mode":%d,"mtime":%r,"ctime":%r}\n'
                                 % (json_path, st.st_size, mode & 0o7777, st.st_mtime, st.st_ctime))
                else:
                    n_errors += 1
                    lines.append('%s","type":"dir","size":%d,"mode":%d,"mtime":%r,"error":%s,"ctime":%r}\n'
                                 % (json_path, st.st_size, mode & 0o7777, st.st_mtime, error, st.st_ctime))
            else:
                n_other += 1
                lines.append('%s","type":"other","size":%d,"mode":%d,"mtime":%r,"ctime":%r}\n'
                             % (json_path, st.st_size, mode & 0o7777, st.st_mtime, st.st_ctime))
    finally:
        if fd is not None:
            os.close(fd)
    return n_file, n_dir, n_link, n_other, n_errors, n_bytes, hashed, hashed_bytes


def _count_lines(stats, counts):
    n_file, n_dir, n_link, n_other, n_errors, n_bytes, hashed, hashed_bytes = counts
    stats['counts']['file'] += n_file
    stats['counts']['dir'] += n_dir
    stats['counts']['symlink'] += n_link
    stats['counts']['other'] += n_other
    stats['entries'] += n_file + n_dir + n_link + n_other
    stats['errors'] += n_errors
    stats['bytes'] += n_bytes
    stats['hashed_files'] += hashed
    stats['hashed_bytes'] += hashed_bytes


def _write_parallel(out, root, selector, split, hash_name, stats, pool, workers, chunk_size, tmp_dir):
    """Write the lines of ``root`` in tree order, the entries read (and hashed) by ``pool``.

    This process walks: it lists each directory (sorted_children) and
    descends into the subdirectories, and hands runs of consecutive entries,
    _BATCH_FILES names at most, to the pool's processes, which lstat (and
    hash) them and format their lines (_segments_lines). Their results are
    written in order; at most ``2 * workers`` tasks are in flight.
    """
    excluded = selector.excluded if selector.exclude else None
    escape = _ESCAPE
    max_names = _BATCH_FILES
    tasks = collections.deque()

    def write_first():
        data, counts = tasks.popleft().get()
        _count_lines(stats, counts)
        out.write(data)

    def submit(segments):
        tasks.append(pool.apply_async(_segments_lines, (segments, selector, split, hash_name)))
        while len(tasks) >= 2 * workers:
            write_first()

    root_b = os.fsencode(root)
    abs_dir = root_b[:-1] if root_b.endswith(_SEP) and len(root_b) > 1 else root_b
    children = sorted_children(root_b, chunk_size, tmp_dir)
    json_dir = '{"path":"'
    rel_dir = ''
    stack = []
    segments = []     # closed runs of the task being filled
    names = []        # the open run, in the directory being listed
    dir_errors = {}
    count = 0         # names in segments and names
    while True:
        child = next(children, None)
        if child is None:
            if names:
                segments.append((abs_dir, json_dir, rel_dir, names, dir_errors))
                names, dir_errors = [], {}
            if not stack:
                break
            children, abs_dir, json_dir, rel_dir = stack.pop()
            continue
        name, is_dir = child
        if is_dir:
            text = name.decode('utf-8', 'surrogateescape')
            rel = rel_dir + text
            if excluded is not None and excluded(rel):
                continue
            names.append(name)
            count += 1
            sub_dir = (abs_dir + _SEP if abs_dir != _SEP else abs_dir) + name
            try:
                sub_children = sorted_children(sub_dir, chunk_size, tmp_dir)
            except OSError as exc:
                dir_errors[name] = _error_json(exc)
            else:
                segments.append((abs_dir, json_dir, rel_dir, names, dir_errors))
                names, dir_errors = [], {}
                stack.append((children, abs_dir, json_dir, rel_dir))
                children, abs_dir, json_dir, rel_dir = sub_children, sub_dir, json_dir + escape(text)[1:-1] + '/', rel + '/'
        else:
            names.append(name)
            count += 1
        if count >= max_names:
            if names:
                segments.append((abs_dir, json_dir, rel_dir, names, dir_errors))
                names, dir_errors = [], {}
            submit(segments)
            segments = []
            count = 0
    if segments:
        submit(segments)
    while tasks:
        write_first()


# ---------------------------------------------------------------- writing

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


def _write_sampled(out, items, sampler, hash_name, workers, stats, tmp_dir):
    """Count mode: the sample is known once the walk is over, so spool the lines, then patch in the hashes."""
    with tempfile.TemporaryFile(dir=tmp_dir) as spool:
        lineno = 0
        block = []
        for item in items:
            if item.__class__ is tuple:
                head, tail, abs_path, size, rel = item
                sampler.offer(abs_path, rel, (lineno, size))
                item = head + tail
            block.append(item)
            lineno += 1
            if len(block) >= _BATCH_LINES:
                spool.write(''.join(block).encode('ascii'))
                block = []
        spool.write(''.join(block).encode('ascii'))
        spool.seek(0)
        patches = {}
        for (lineno, size), result in _hashed_chosen(sampler, hash_name, workers):
            patches[lineno] = (size,) + result
        for lineno, line in enumerate(spool):
            item = patches.get(lineno)
            if item is not None:
                size, error, digest = item
                cut = line.rindex(b',"ctime":')
                if error is None:
                    stats['hashed_files'] += 1
                    stats['hashed_bytes'] += size
                    line = b'%s,"hash":"%s"%s' % (line[:cut], digest.encode('ascii'), line[cut:])
                else:
                    stats['errors'] += 1
                    line = b'%s,"error":%s%s' % (line[:cut], error.encode('ascii'), line[cut:])
            out.write(line)


def _hashed_chosen(sampler, hash_name, workers):
    """Count mode: hash the chosen files; yield ``(line, (error JSON or None, digest or None))``."""
    chosen = sampler.chosen()
    workers = workers or os.cpu_count() or 1

    def one(abs_path):
        try:
            return None, hash_file(abs_path, hash_name)
        except OSError as exc:
            return _error_json(exc), None

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(one, [abs_path for abs_path, _rel, _line in chosen])
        for (_abs_path, _rel, line), result in zip(chosen, results):
            yield line, result


def write_manifest(root, dest, mode='content', hash_name=DEFAULT_HASH, exclude=None, reject=None,
                   reject_base='', sample_fraction=None, sample_count=None, sample_seed='',
                   chunk_size=CHUNK_SIZE, workers=None):
    """Scan ``root`` and write its manifest in tree order to ``dest``; return stats.

    ``mode``: ``metadata`` reads no file content; ``content`` hashes every
    regular file with ``hash_name``; ``sample`` hashes a deterministic random
    sample (``sample_fraction`` or ``sample_count``, ``sample_seed``; see
    Sampler). ``exclude``, ``reject`` and ``reject_base``: see Selector.
    ``chunk_size``: directories of more names than this are sorted in chunks
    (see sorted_names). ``dest`` is replaced atomically. Temporary files (the
    partial manifest and sort chunks) go next to ``dest``: node-local /tmp is
    often too small. Stats: ``entries``, ``counts`` per type, ``errors``,
    ``bytes`` (files), ``hashed_files``, ``hashed_bytes``.
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
            if sampler is not None and sampler.count is not None:
                items = tree_lines(root, selector, _every_file, stats, chunk_size, dest_dir)
                _write_sampled(out, items, sampler, hash_name, workers, stats, dest_dir)
            else:
                split = None if mode == 'metadata' else sampler.wanted if sampler is not None else _every_file
                _write_walk(out, root, selector, split, hash_name, stats, workers, chunk_size, dest_dir)
        os.replace(tmp_path, dest)
    except BaseException:
        os.unlink(tmp_path)
        raise
    return stats


def _every_file(_rel):
    return True


def _write_walk(out, root, selector, split, hash_name, stats, workers, chunk_size, tmp_dir):
    """Walk in parallel (_write_parallel) with a process pool, else in this process (tree_lines)."""
    workers = workers or os.cpu_count() or 1
    parallel = _HASH_IN_PROCESSES and (split is not None or _PARALLEL_METADATA)
    pool = _process_pool(workers) if parallel else None
    if pool is None:
        items = tree_lines(root, selector, split, stats, chunk_size, tmp_dir)
        if split is None:
            _write_plain(out, items)
        else:
            _write_hashed(out, items, hash_name, workers, stats)
        return
    try:
        _write_parallel(out, root, selector, split, hash_name, stats, pool, workers, chunk_size, tmp_dir)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


# ---------------------------------------------------------------- reading

_FAST_PREFIX = b'{"path":"'
_FAST_START = len(_FAST_PREFIX)


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

    def _parse_entry(self, line, lineno):
        entry = self._parse(line, lineno)
        if not isinstance(entry.get('path'), str) or 'type' not in entry:
            self._fail(lineno, 'entry without "path" or "type"')
        return entry

    def _parse_header(self):
        line = self._fh.readline()
        if not line:
            self._fail(1, 'empty file, not a manifest')
        header = self._parse(line, 1)
        if header.get('manifest') != MANIFEST_VERSION:
            self._fail(1, 'not a manifest header (expected "manifest": %d)' % MANIFEST_VERSION)
        return header

    def lines(self):
        """Iterate ``(key, line)`` in order, ``line`` the entry's raw line, or ``(key, entry)``.

        A line that starts with its path, as tree_manifest writes them, is
        given raw: only its path is decoded, the rest when needed (see
        entry_of). Any other line is parsed and its entry given instead.
        """
        previous = b''
        lineno = 1
        entries = errors = 0
        scan = _SCANSTRING
        prefix, start, sep, sep_key = _FAST_PREFIX, _FAST_START, _SEP, _SEP_KEY
        try:
            for line in self._fh:
                lineno += 1
                end = line.find(b'"', start) if line[:start] == prefix else -1
                # 44 and 125: the comma or the brace after the path's closing quote.
                if end > 0 and line[-2:] == b'}\n' and line[end + 1] in (44, 125):
                    item = line
                    raw = line[start:end]
                    if b'\\' in raw:
                        # Escapes: the first quote may be one of them. Let the JSON scanner find the end.
                        try:
                            text = scan(line.decode('utf-8'), _FAST_START)[0]
                        except ValueError as exc:
                            self._fail(lineno, 'invalid JSON (%s)' % exc)
                        raw = text.encode('utf-8', 'surrogateescape')
                    key = raw.replace(sep, sep_key)
                    if b'"error"' in line and 'error' in self._parse_entry(line, lineno):
                        errors += 1
                else:
                    item = self._parse_entry(line, lineno)
                    key = path_key(item['path'])
                    if 'error' in item:
                        errors += 1
                if key <= previous and entries:
                    self._fail(lineno, 'entries not in tree order or duplicated')
                previous = key
                entries += 1
                yield key, item
        finally:
            self.entries = entries
            self.errors = errors

    def __iter__(self):
        for key, item in self.lines():
            yield key, entry_of(item)

    def close(self):
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def entry_of(item):
    """The entry of a ``(key, item)`` of ManifestReader.lines: parse a raw line."""
    if item.__class__ is not bytes:
        return item
    try:
        entry = load_line(item)
    except ValueError as exc:
        raise ManifestError('invalid JSON (%s) in the entry line %r' % (exc, item[:200]))
    if not isinstance(entry, dict) or not isinstance(entry.get('path'), str) or 'type' not in entry:
        raise ManifestError('entry without "path" or "type": %r' % item[:200])
    return entry


_CTIME = b',"ctime":'


def _same_lines(src, dst):
    """Whether two raw entry lines of one path agree on everything compared: all but a last ``ctime``.

    Conservative: False sends the pair to the full comparison. A line with an
    error is never the same (its unreadable difference must be reported).
    """
    if src == dst:
        return b'"error"' not in src
    cut = src.rfind(_CTIME)
    return (cut > 0 and src[:cut] == dst[:cut] and dst.startswith(_CTIME, cut) and b'"error"' not in src
            and src.find(b',', cut + 1) < 0 and dst.find(b',', cut + 1) < 0)


# ---------------------------------------------------------------- comparing

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


_DIR_TYPE = b'"type":"dir"'


def _is_dir(item):
    if item.__class__ is bytes:
        return _DIR_TYPE in item
    return item['type'] == 'dir'


def _parsed(ancestors):
    """Ancestors ``[key + NUL, source item, destination item]``, their raw lines parsed in place."""
    for ancestor in ancestors:
        for side in (1, 2):
            if ancestor[side] is not None:
                ancestor[side] = entry_of(ancestor[side])
    return ancestors


def _differences_with_entries(src_entries, dst_entries, checks, mtime_tolerance, compare_content, in_flight):
    """Yield ``(difference, source_entry, destination_entry)``; see iter_differences.

    The items may be raw lines (ManifestReader.lines): a path whose two lines
    agree on everything compared (_same_lines) is passed over without parsing
    them; the others are parsed and compared field by field.
    """
    track = in_flight is not None and getattr(in_flight, 'enabled', True)
    ancestors = []  # the directories above the current path: tree order keeps them on a stack
    src = iter(src_entries)
    dst = iter(dst_entries)
    s = next(src, None)
    d = next(dst, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s[0] < d[0]):
            key, s_item = s
            d_item = None
            s = next(src, None)
        elif s is None or d[0] < s[0]:
            key, d_item = d
            s_item = None
            d = next(dst, None)
        else:
            key, s_item = s
            d_item = d[1]
            s = next(src, None)
            d = next(dst, None)
            if s_item.__class__ is bytes and d_item.__class__ is bytes and _same_lines(s_item, d_item):
                if track:
                    while ancestors and not key.startswith(ancestors[-1][0]):
                        ancestors.pop()
                    if _DIR_TYPE in s_item:
                        ancestors.append([key + _SEP_KEY, s_item, d_item])
                continue
        src_entry = None if s_item is None else entry_of(s_item)
        dst_entry = None if d_item is None else entry_of(d_item)
        if track:
            while ancestors and not key.startswith(ancestors[-1][0]):
                ancestors.pop()
        diffs = list(_path_diffs(src_entry, dst_entry, checks, mtime_tolerance, compare_content))
        entry = src_entry if src_entry is not None else dst_entry
        if diffs and track and in_flight(src_entry, dst_entry, _parsed(ancestors)):
            yield ({'path': entry['path'], 'category': 'in_flight', 'categories': [d[0] for d in diffs],
                    'source': None if src_entry is None else src_entry['type'],
                    'destination': None if dst_entry is None else dst_entry['type']}, src_entry, dst_entry)
        else:
            for category, src_value, dst_value in diffs:
                yield ({'path': entry['path'], 'category': category, 'source': src_value,
                        'destination': dst_value}, src_entry, dst_entry)
        if track and ((src_entry is not None and src_entry['type'] == 'dir')
                      or (dst_entry is not None and dst_entry['type'] == 'dir')):
            ancestors.append([key + _SEP_KEY, src_entry, dst_entry])


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
            differences = _differences_with_entries(src.lines(), dst.lines(), checks, mtime_tolerance,
                                                    compare_content, in_flight)
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

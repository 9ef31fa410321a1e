# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark of the audit: our metadata and content modes against the old script and rsync.

Builds a source tree (100 000 files, about 2 GiB, nested, with symlinks and
hard links) under /var/tmp, copies it with ``cp -a`` and seeds differences in
the copy, then times, one after the other on the same machine:

* ``metadata``: tree_manifest mode metadata on both trees + manifest_compare;
* ``content``: tree_manifest mode content (xxh3, one thread per core) on both trees + manifest_compare;
* ``reference``: the old audit, ``find -type f | sort | xargs md5sum`` on both trees, then ``diff``;
* ``rsync``: ``rsync -rlc --delete --dry-run --itemize-changes src/ dst/``.

Each is run with a cold page cache (dropped before the run, needs root) and
again warm. Then metadata-mode peak RSS at 10k / 100k / 1M entries (empty
files). Prints Markdown tables; removes the trees unless --keep.

Not a test: nothing here runs in CI.
Usage: python3 benchmarks/audit/bench.py [--root /var/tmp/hpc_mirror_bench/audit] [--files 100000] [--keep]
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RUNNER = r'''
import json, sys, time
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import write_manifest, compare_manifests
mode, src, dst, work = sys.argv[1:5]
times = [time.time()]
write_manifest(src, work + "/src.manifest", mode=mode)
times.append(time.time())
write_manifest(dst, work + "/dst.manifest", mode=mode)
times.append(time.time())
result = compare_manifests(work + "/src.manifest", work + "/dst.manifest", report=work + "/report.jsonl")
times.append(time.time())
paths = set()
with open(work + "/report.jsonl", "rb") as fh:
    for line in fh:
        paths.add(json.loads(line)["path"])
phases = [round(b - a, 3) for a, b in zip(times, times[1:])]
print(json.dumps({"paths": sorted(paths), "counts": result["counts"], "phases": phases}))
'''


def sh(cmd, **kwargs):
    return subprocess.run(cmd, shell=True, check=True, **kwargs)


# ---------------------------------------------------------------- building

def build_tree(src, files, seed=1):
    """``files`` regular files of mixed sizes in a 3-level tree, plus symlinks and hard links."""
    rng = random.Random(seed)
    pool = os.urandom(64 * 1024 * 1024)  # contents are slices of it at random offsets
    per_dir = 100
    written = 0
    for i in range(files):
        d = os.path.join(src, 'd%03d' % (i // (per_dir * 10) % 1000), 'e%02d' % (i // per_dir % 10))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        roll = rng.random()
        if roll < 0.0001:
            size = 16 * 1024 * 1024                            # 10 large files
        elif roll < 0.01:
            size = rng.randint(256 * 1024, 2 * 1024 * 1024)    # ~1% medium
        else:
            size = rng.randint(0, 16 * 1024)                   # small, most of them
        offset = rng.randint(0, len(pool) - size)
        with open(os.path.join(d, 'f%06d.dat' % i), 'wb') as fh:
            fh.write(pool[offset:offset + size])
        written += size
        if i % 100 == 1:
            os.symlink('f%06d.dat' % (i - 1), os.path.join(d, 'link%06d' % i))
        if i % 200 == 2:
            os.link(os.path.join(d, 'f%06d.dat' % i), os.path.join(d, 'hard%06d' % i))
    os.makedirs(os.path.join(src, 'empty', 'dir'))
    return written


def seed_differences(dst, files):
    """Seed differences in the copy; returns {path: kind}."""
    def rel(i):
        return 'd%03d/e%02d/f%06d.dat' % (i // 1000 % 1000, i // 100 % 10, i)
    seeded = {}
    for i in (10, 50010, files - 10):                      # missing on the destination
        os.unlink(os.path.join(dst, rel(i)))
        seeded[rel(i)] = 'missing'
    for n, d in enumerate(('d001/e01', 'd050/e05', 'empty/dir')):   # extra on the destination
        path = '%s/extra%d.dat' % (d, n)
        with open(os.path.join(dst, path), 'wb') as fh:
            fh.write(b'extra')
        seeded[path] = 'extra'
    for i in (20, 60020, files - 20):                      # modified: size and content differ
        path = os.path.join(dst, rel(i))
        st = os.stat(path)
        with open(path, 'ab') as fh:
            fh.write(b'appended')
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        seeded[rel(i)] = 'modified'
    # Silent corruption: same size, same mtime, different bytes. Only reading contents finds it.
    i = 70030
    path = os.path.join(dst, rel(i))
    st = os.stat(path)
    with open(path, 'r+b') as fh:
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([(first[0] + 1) % 256]) if first else b'')
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    if st.st_size:
        seeded[rel(i)] = 'silent'
    return seeded


# ---------------------------------------------------------------- running

def drop_caches():
    sh('sync')
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as fh:
            fh.write('3\n')
        return True
    except OSError:
        return False


def timed(command, cwd=None, env=None):
    """Run a shell command under GNU time: (seconds, peak RSS KiB of the largest process, stdout)."""
    out = subprocess.run(['/usr/bin/time', '-f', 'TIME %e %M', 'bash', '-c', command], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    match = re.search(r'TIME ([\d.]+) (\d+)', out.stderr.decode())
    if out.returncode not in (0, 1) or not match:  # diff exits 1 on differences
        raise RuntimeError('%s failed: %s' % (command, out.stderr.decode()[-2000:]))
    return float(match.group(1)), int(match.group(2)), out.stdout


PHASES = {}


def run_ours(mode, src, dst, work, cache):
    env = dict(os.environ, PYTHONPATH=REPO)
    seconds, rss, out = timed('%s -c %s %s %s %s %s' % (
        sys.executable, shquote(RUNNER), mode, src, dst, work), env=env)
    result = json.loads(out)
    PHASES[(cache, mode)] = result['phases']
    return seconds, rss, set(result['paths'])


def shquote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def run_reference(src, dst, work):
    command = ('(cd %s && find . -type f | sort | xargs md5sum) > %s/ref_src.md5 && '
               '(cd %s && find . -type f | sort | xargs md5sum) > %s/ref_dst.md5 && '
               'diff %s/ref_src.md5 %s/ref_dst.md5 > %s/ref.diff; true') % (src, work, dst, work, work, work, work)
    seconds, rss, _out = timed(command)
    paths = set()
    with open(os.path.join(work, 'ref.diff'), 'rb') as fh:
        for line in fh:
            if line[:2] in (b'< ', b'> '):
                paths.add(line[2:].rstrip(b'\n').split(b'  ', 1)[1][2:].decode('utf-8', 'surrogateescape'))
    return seconds, rss, paths


def run_rsync(src, dst, work):
    seconds, rss, out = timed('rsync -rlc --delete --dry-run --itemize-changes %s/ %s/' % (src, dst))
    paths = set()
    for line in out.decode('utf-8', 'surrogateescape').splitlines():
        if line.startswith('*deleting'):
            paths.add(line.split(None, 1)[1])
        elif line and not line.startswith('.d'):   # directory time changes are not content
            paths.add(line.split(' ', 1)[1])
    return seconds, rss, paths


# ---------------------------------------------------------------- scaling

def build_empty(root, entries):
    per_dir = 1000
    for i in range(0, entries, per_dir):
        d = os.path.join(root, 'd%04d' % (i // per_dir))
        os.makedirs(d)
        for j in range(per_dir):
            open(os.path.join(d, 'f%04d' % j), 'wb').close()


def rss_scaling(root, work):
    rows = []
    big = os.path.join(root, 'empty_1m')
    build_empty(big, 1000000)
    for entries, sub in ((10000, 10), (100000, 100), (1000000, 1000)):
        tree = os.path.join(root, 'scale_%d' % entries)
        os.makedirs(tree)
        for k in range(sub):   # symlinked? no: the walk does not follow links. Move directories in.
            os.rename(os.path.join(big, 'd%04d' % k), os.path.join(tree, 'd%04d' % k))
        code = ('from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import write_manifest;'
                'import sys; print(write_manifest(sys.argv[1], sys.argv[2], mode="metadata")["entries"])')
        seconds, rss, out = timed('%s -c %s %s %s/scale.manifest' % (sys.executable, shquote(code), tree, work),
                                  env=dict(os.environ, PYTHONPATH=REPO))
        rows.append((int(out), seconds, rss))
        for k in range(sub):
            os.rename(os.path.join(tree, 'd%04d' % k), os.path.join(big, 'd%04d' % k))
        os.rmdir(tree)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--root', default='/var/tmp/hpc_mirror_bench/audit')
    parser.add_argument('--files', type=int, default=100000)
    parser.add_argument('--keep', action='store_true', help='keep the trees')
    parser.add_argument('--skip-scaling', action='store_true')
    args = parser.parse_args()
    if shutil.which('rsync') is None:
        sys.exit('rsync is needed: apt-get install rsync')
    src, dst, work = (os.path.join(args.root, n) for n in ('src', 'dst', 'work'))
    if os.path.exists(args.root):
        shutil.rmtree(args.root)
    os.makedirs(work)
    try:
        start = time.time()
        size = build_tree(src, args.files)
        sh('cp -a %s %s' % (src, dst))
        seeded = seed_differences(dst, args.files)
        entries = int(subprocess.check_output('find %s -mindepth 1 | wc -l' % src, shell=True))
        print('built %d files (%d entries, %.2f GiB) and the copy in %.0f s; seeded %d differences: %s' % (
            args.files, entries, size / 2.0 ** 30, time.time() - start, len(seeded),
            ', '.join('%s %d' % (k, list(seeded.values()).count(k)) for k in sorted(set(seeded.values())))))
        print('load average before the runs: %s' % open('/proc/loadavg').read().strip())
        approaches = [
            ('metadata', lambda cache: run_ours('metadata', src, dst, work, cache)),
            ('content', lambda cache: run_ours('content', src, dst, work, cache)),
            ('reference', lambda cache: run_reference(src, dst, work)),
            ('rsync', lambda cache: run_rsync(src, dst, work)),
        ]
        results = {}
        for cache in ('cold', 'warm'):
            for name, run in approaches:
                if cache == 'cold' and not drop_caches():
                    print('cannot drop the page cache (not root?): cold runs are warm')
                seconds, rss, paths = run(cache)
                results[(cache, name)] = (seconds, rss, paths)
                print('%s %s: %.2f s, %d MiB, %d paths' % (cache, name, seconds, rss // 1024, len(paths)),
                      flush=True)
        print()
        print('| cache | approach | wall s | files/s | MB/s | peak RSS MiB | differences found | exactly the seeded |'
              ' speed-up vs reference |')
        print('|---|---|---:|---:|---:|---:|---:|---|---:|')
        files = args.files * 2  # both trees
        mb = size * 2 / 1e6
        for (cache, name), (seconds, rss, paths) in sorted(results.items(), key=lambda kv: (kv[0][0], 0)):
            expected = set(p for p, k in seeded.items() if name != 'metadata' or k != 'silent')
            ref = results[(cache, 'reference')][0]
            print('| %s | %s | %.2f | %.0f | %.0f | %d | %d | %s | %.1fx |' % (
                cache, name, seconds, files / seconds, mb / seconds, rss // 1024, len(paths),
                'yes' if paths == expected else 'NO: extra %s, missed %s' % (
                    sorted(paths - expected)[:5], sorted(expected - paths)[:5]),
                ref / seconds))
        print()
        print('metadata mode cannot see the silent corruption (same size and mtime) by design;'
              ' its expected set leaves it out.')
        print()
        print('Our phases (s): audit.yml runs the two manifests at once on their two hosts, so its wall time is'
              ' about the longer manifest + the comparison (+ fetching the manifests).')
        print()
        print('| cache | mode | source manifest | destination manifest | comparison |'
              ' two hosts: longer manifest + comparison | speed-up vs reference |')
        print('|---|---|---:|---:|---:|---:|---:|')
        for (cache, mode), (src_s, dst_s, cmp_s) in sorted(PHASES.items()):
            both = max(src_s, dst_s) + cmp_s
            print('| %s | %s | %.2f | %.2f | %.2f | %.2f | %.1fx |' % (
                cache, mode, src_s, dst_s, cmp_s, both, results[(cache, 'reference')][0] / both))
        if not args.skip_scaling:
            shutil.rmtree(src)
            shutil.rmtree(dst)
            print()
            print('| entries | metadata manifest s | peak RSS MiB |')
            print('|---:|---:|---:|')
            for entries_n, seconds, rss in rss_scaling(args.root, work):
                print('| %d | %.2f | %d |' % (entries_n, seconds, rss // 1024), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
module: tree_manifest
short_description: Write a manifest of a directory tree, in tree order
version_added: 0.1.0
description:
  - Walks a directory tree without following symlinks and writes one JSON line per
    entry (relative path, type, size, mtime, ctime, permission bits, symlink target and,
    depending on O(mode), a content hash of regular files), in tree order.
  - Two manifests, for example of the source and of the destination of a mirror,
    are compared with M(sr3.hpc_mirror.manifest_compare).
  - Each directory is listed in name order, so the manifest comes out in tree order with no
    sort of the whole tree, and memory stays bounded on trees of many millions of entries;
    a directory of more than 100000 entries is sorted in chunks spilled to temporary files
    next to O(dest).
  - The module lists the directories; forked worker processes, one per CPU by default, read the
    entries (lstat) and hash the regular files, in parallel. Where no process pool can be made
    (no fork, no POSIX semaphores) the module reads the entries itself and hashes in threads.
  - Unreadable files and directories do not fail the module; their entries carry an
    C(error) field and they are counted in RV(errors).
  - >-
    The first line of the manifest is a header
    (C({"manifest": 2, "root": ..., "mode": ..., "hash": ..., "started": ..., ...})).
    Names that are not valid UTF-8 are stored with Python's C(surrogateescape)
    encoding as JSON C(\udcXX) escapes, so any name survives exactly.
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
options:
  path:
    description:
      - Absolute path of the directory tree to describe. The directory itself is not an entry.
    type: path
    required: true
  dest:
    description:
      - File to write the manifest to, on the host the module runs on. It is replaced atomically.
      - Its directory must exist. Keep it outside O(path), or exclude it, otherwise the
        manifest lists its own temporary file.
    type: path
    required: true
  mode:
    description:
      - V(metadata) reads no file content (type, size, times, mode, symlink target only).
      - V(content) hashes every regular file with O(hash).
      - V(sample) hashes a random sample of the regular files, O(sample_fraction) or
        O(sample_count) of them, chosen by path with O(sample_seed), so that the source and
        the destination given the same seed hash the same paths.
    type: str
    choices: [metadata, content, sample]
    default: content
  hash:
    description:
      - Content hash of regular files in the V(content) and V(sample) modes.
      - V(xxh3) (128 bit) needs the Python package C(xxhash), V(blake3) the package C(blake3), on the
        interpreter the module runs with; without it O(hash_fallback) is used, with a warning.
      - V(blake2b), V(md5) and V(sha256) come with Python; V(md5) may be unavailable on FIPS systems.
    type: str
    choices: [xxh3, blake3, blake2b, md5, sha256]
    default: xxh3
  hash_fallback:
    description:
      - Algorithm used when the library of O(hash) is missing. Empty to fail instead.
      - RV(hash) tells the algorithm used; compare manifests hashed with the same one.
    type: str
    default: blake2b
  exclude:
    description:
      - Python regular expressions searched (C(re.search)) in the path relative to O(path).
        Matching entries are skipped; a matching directory is skipped with everything below it.
    type: list
    elements: str
    default: []
  reject:
    description:
      - The mirror's sr3 C(reject) patterns, applied as the copier applies them - C(re.match) against
        the URL the flow posts, C(file:<reject_root>/<relative path>) with the default O(reject_base_url) -
        so that entries the copier never copies are left out of both manifests.
      - Only the matching entry is left out, not what lies below a matching directory, like sr3.
    type: list
    elements: str
    default: []
  reject_root:
    description:
      - Source tree of the flow, as the copier sees it in the URLs of the events. Give the same value
        on the source and on the destination side. Defaults to O(path).
    type: path
  reject_base_url:
    description:
      - The C(post_baseUrl) of the flow's posting config; the URL matched is this, then O(reject_root)
        without its leading slash, then the relative path.
    type: str
    default: file:/
  sample_fraction:
    description:
      - V(sample) mode, fraction of the regular files hashed, above 0 and at most 1.
    type: float
  sample_count:
    description:
      - V(sample) mode, number of regular files hashed.
    type: int
  sample_seed:
    description:
      - V(sample) mode, seed of the choice. Same seed on both sides, a new one per audit.
    type: str
    default: ''
  workers:
    description:
      - Worker processes (or hashing threads, see above). Defaults to the number of CPUs.
    type: int
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Only reads the tree. The manifest is written in check mode too, and changed is always false.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
notes:
  - Run it as a user that can read the whole tree, or the manifest records errors.
seealso:
  - module: sr3.hpc_mirror.manifest_compare
"""

EXAMPLES = r"""
- name: Describe the source tree, hashing every file
  sr3.hpc_mirror.tree_manifest:
    path: /lustre/primary/data
    dest: /var/tmp/primary.manifest
    reject:
      - '.*\.tmp$'
      - '.*\.lock$'
  register: primary

- name: Metadata only, for a quick check of a huge tree
  sr3.hpc_mirror.tree_manifest:
    path: /gpfs/secondary/data
    dest: /var/tmp/secondary.manifest
    mode: metadata
    reject:
      - '.*\.tmp$'
    reject_root: /lustre/primary/data

- name: Hash 10000 files chosen at random, the same ones on the other side
  sr3.hpc_mirror.tree_manifest:
    path: /lustre/primary/data
    dest: /var/tmp/primary.manifest
    mode: sample
    sample_count: 10000
    sample_seed: "{{ audit_seed }}"
"""

RETURN = r"""
dest:
  description: Path of the manifest written.
  returned: success
  type: str
  sample: /var/tmp/primary.manifest
scan_mode:
  description: Mode of the manifest (O(mode); a result named C(mode) would be taken for the file mode of O(dest)).
  returned: success
  type: str
  sample: content
hash:
  description: Hash algorithm used, V(none) in V(metadata) mode. Differs from O(hash) after a fallback.
  returned: success
  type: str
  sample: xxh3
entries:
  description: Number of entries in the manifest.
  returned: success
  type: int
  sample: 1250000
counts:
  description: Number of entries per type.
  returned: success
  type: dict
  sample: {"file": 1200000, "dir": 49000, "symlink": 1000, "other": 0}
errors:
  description: Number of entries that could not be fully read (they carry an C(error) field).
  returned: success
  type: int
  sample: 0
bytes:
  description: Total size of the regular files.
  returned: success
  type: int
  sample: 53687091200
hashed_files:
  description: Number of regular files hashed.
  returned: success
  type: int
  sample: 1200000
hashed_bytes:
  description: Bytes hashed.
  returned: success
  type: int
  sample: 53687091200
duration:
  description: Seconds spent writing the manifest.
  returned: success
  type: float
  sample: 12.5
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import (
    DEFAULT_FALLBACK,
    DEFAULT_HASH,
    HASH_CHOICES,
    MODES,
    HashUnavailable,
    choose_hash,
    compile_excludes,
    reject_url_base,
    write_manifest,
)


def validate(module):
    """Fail with a clear message on arguments the argument_spec cannot check."""
    params = module.params
    path = params['path']
    if not os.path.isabs(path):
        module.fail_json(msg='path must be absolute: %s' % path)
    if not os.path.exists(path):
        module.fail_json(msg='path does not exist: %s' % path)
    if not os.path.isdir(path):
        module.fail_json(msg='path is not a directory: %s' % path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(params['dest']))):
        module.fail_json(msg='directory of dest does not exist: %s' % params['dest'])
    for option in ('exclude', 'reject'):
        try:
            compile_excludes(params[option])
        except re.error as exc:
            module.fail_json(msg='invalid %s regex: %s' % (option, exc))
    if params['mode'] == 'sample' and (params['sample_fraction'] is None) == (params['sample_count'] is None):
        module.fail_json(msg='mode sample needs one of sample_fraction or sample_count')
    if params['sample_fraction'] is not None and not 0 < params['sample_fraction'] <= 1:
        module.fail_json(msg='sample_fraction must be above 0 and at most 1, got %s' % params['sample_fraction'])
    if params['sample_count'] is not None and params['sample_count'] < 1:
        module.fail_json(msg='sample_count must be 1 or more, got %s' % params['sample_count'])
    if params['workers'] is not None and params['workers'] < 1:
        module.fail_json(msg='workers must be 1 or more, got %s' % params['workers'])


def pick_hash(module):
    """The algorithm to use, after a fallback if needed; None in metadata mode."""
    params = module.params
    if params['mode'] == 'metadata':
        return None
    if params['hash_fallback'] and params['hash_fallback'] not in HASH_CHOICES:
        module.fail_json(msg='hash_fallback must be one of %s, got %s'
                         % (', '.join(HASH_CHOICES), params['hash_fallback']))
    try:
        name, warning = choose_hash(params['hash'], params['hash_fallback'])
    except HashUnavailable as exc:
        module.fail_json(msg='%s; install it there or choose another hash' % exc)
    except ValueError as exc:
        module.fail_json(msg='hash %s unavailable on this host: %s' % (params['hash'], exc))
    if warning:
        module.warn(warning)
    return name


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            dest=dict(type='path', required=True),
            mode=dict(type='str', choices=list(MODES), default='content'),
            hash=dict(type='str', choices=list(HASH_CHOICES), default=DEFAULT_HASH),
            hash_fallback=dict(type='str', default=DEFAULT_FALLBACK),
            exclude=dict(type='list', elements='str', default=[]),
            reject=dict(type='list', elements='str', default=[]),
            reject_root=dict(type='path'),
            reject_base_url=dict(type='str', default='file:/'),
            sample_fraction=dict(type='float'),
            sample_count=dict(type='int'),
            sample_seed=dict(type='str', default='', no_log=False),
            workers=dict(type='int'),
        ),
        mutually_exclusive=[('sample_fraction', 'sample_count')],
        supports_check_mode=True,
    )
    validate(module)
    params = module.params
    hash_name = pick_hash(module)
    start = time.time()
    try:
        stats = write_manifest(
            params['path'], params['dest'], mode=params['mode'], hash_name=hash_name,
            exclude=params['exclude'], reject=params['reject'],
            reject_base=reject_url_base(params['reject_root'] or params['path'], params['reject_base_url']),
            sample_fraction=params['sample_fraction'], sample_count=params['sample_count'],
            sample_seed=params['sample_seed'], workers=params['workers'])
    except OSError as exc:
        module.fail_json(msg='cannot write manifest of %s to %s: %s' % (params['path'], params['dest'], exc))
    # Information gathering: the tree is untouched, so never "changed".
    module.exit_json(changed=False, dest=params['dest'], scan_mode=params['mode'], hash=hash_name or 'none',
                     duration=round(time.time() - start, 3), **stats)


if __name__ == '__main__':
    main()

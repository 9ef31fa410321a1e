#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
module: tree_manifest
short_description: Write a sorted manifest of a directory tree
version_added: 0.1.0
description:
  - Walks a directory tree without following symlinks and writes one JSON line per
    entry (relative path, type, size, mtime, permission bits, symlink target and,
    optionally, a content hash of regular files), sorted by path.
  - Two manifests, for example of the source and of the destination of a mirror,
    are compared with M(sr3.hpc_mirror.manifest_compare).
  - Memory stays bounded on trees of many millions of entries; beyond 200000 entries
    the sort spills chunks to temporary files next to O(dest).
  - Regular files are hashed in parallel, one thread per CPU.
  - Unreadable files and directories do not fail the module; their entries carry an
    C(error) field and they are counted in RV(errors).
  - >-
    The first line of the manifest is a header
    (C({"manifest": 1, "root": ..., "hash": ..., "exclude": [...], "created": ...})).
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
  hash:
    description:
      - Content hash of regular files. V(none) records metadata only and is much faster.
      - V(md5) may be unavailable on FIPS systems.
    type: str
    choices: [blake2b, md5, sha256, none]
    default: blake2b
  exclude:
    description:
      - Python regular expressions searched (C(re.search)) in the path relative to O(path),
        like sr3 C(reject) patterns. Matching entries are skipped; a matching directory
        is skipped with everything below it.
    type: list
    elements: str
    default: []
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
- name: Describe the source tree
  sr3.hpc_mirror.tree_manifest:
    path: /lustre/primary/data
    dest: /var/tmp/primary.manifest
    exclude:
      - '\.tmp$'
      - '^scratch/'
  register: primary

- name: Metadata only, for a quick check of a huge tree
  sr3.hpc_mirror.tree_manifest:
    path: /gpfs/secondary/data
    dest: /var/tmp/secondary.manifest
    hash: none
"""

RETURN = r"""
dest:
  description: Path of the manifest written.
  returned: success
  type: str
  sample: /var/tmp/primary.manifest
hash:
  description: Hash algorithm used.
  returned: success
  type: str
  sample: blake2b
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
    HASH_CHOICES,
    check_hash_name,
    compile_excludes,
    write_manifest,
)


def validate(module):
    """Fail with a clear message on arguments the argument_spec cannot check."""
    path = module.params['path']
    if not os.path.isabs(path):
        module.fail_json(msg='path must be absolute: %s' % path)
    if not os.path.exists(path):
        module.fail_json(msg='path does not exist: %s' % path)
    if not os.path.isdir(path):
        module.fail_json(msg='path is not a directory: %s' % path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(module.params['dest']))):
        module.fail_json(msg='directory of dest does not exist: %s' % module.params['dest'])
    try:
        compile_excludes(module.params['exclude'])
    except re.error as exc:
        module.fail_json(msg='invalid exclude regex: %s' % exc)
    try:
        check_hash_name(module.params['hash'])
    except ValueError as exc:
        module.fail_json(msg='hash %s unavailable on this host: %s' % (module.params['hash'], exc))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            dest=dict(type='path', required=True),
            hash=dict(type='str', choices=list(HASH_CHOICES), default='blake2b'),
            exclude=dict(type='list', elements='str', default=[]),
        ),
        supports_check_mode=True,
    )
    validate(module)
    params = module.params
    start = time.time()
    try:
        stats = write_manifest(params['path'], params['dest'], params['hash'], params['exclude'])
    except OSError as exc:
        module.fail_json(msg='cannot write manifest of %s to %s: %s' % (params['path'], params['dest'], exc))
    # Information gathering: the tree is untouched, so never "changed".
    module.exit_json(changed=False, dest=params['dest'], hash=params['hash'],
                     duration=round(time.time() - start, 3), **stats)


if __name__ == '__main__':
    main()

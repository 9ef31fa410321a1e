#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
module: manifest_compare
short_description: Compare two tree manifests and report the differences
version_added: 0.1.0
description:
  - Compares two manifests written by M(sr3.hpc_mirror.tree_manifest), typically of the
    source and of the destination of a mirror, in one streaming pass over the two sorted
    files, so memory stays small whatever the size of the trees.
  - Differences are classified per path in categories; a path can be in several
    categories (for example V(size), V(content) and V(mtime)).
  - V(missing) is on O(source) but not on O(destination); V(extra) is the reverse;
    V(type) differs in type (file, dir, symlink, other), then nothing else is compared for
    that path; V(size), V(content) and V(mtime) concern regular files only; V(content)
    is compared only when both manifests hold hashes of the same algorithm (a warning says
    otherwise); V(symlink_target) concerns symlinks; V(mode) concerns everything but symlinks;
    V(unreadable) is an entry that could not be fully read on either side (its C(error)).
    Directory sizes and mtimes are never compared, they depend on the file system.
  - With O(settle), differences of paths the mirror may still be fixing are counted in
    RV(in_flight) instead. A path is in flight when it changed (mtime or ctime) less than
    O(settle) seconds before the scan of its side started, on either side; a path missing on the
    destination also when a source directory above it that the destination lacks too changed
    lately (a directory created or moved in); an extra path also when its nearest directory that
    exists on the source changed lately (something deleted or moved away there).
  - The module never fails because of differences, so the playbook decides what to do with
    RV(in_sync) and RV(counts). It fails on a missing, unreadable or invalid manifest.
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
options:
  source:
    description:
      - Manifest of the reference tree, on the host the module runs on.
    type: path
    required: true
  destination:
    description:
      - Manifest of the tree that should match O(source), on the host the module runs on.
    type: path
    required: true
  checks:
    description:
      - Categories of differences to look for. Leave out a category to ignore it,
        for example V(mtime) when the mirror does not preserve times.
    type: list
    elements: str
    choices: [missing, extra, type, size, content, symlink_target, mode, mtime, unreadable]
    default: [missing, extra, type, size, content, symlink_target, mode, mtime, unreadable]
  mtime_tolerance:
    description:
      - Largest difference of file modification times, in seconds, that is not reported.
    type: float
    default: 1.0
  settle:
    description:
      - Seconds; differences of paths changed more recently than this before the scans are
        in flight, not differences. V(0) turns this off.
    type: float
    default: 0
  max_examples:
    description:
      - Number of differences returned in RV(examples), the first ones in tree order, and of
        in-flight paths in RV(in_flight_examples).
    type: int
    default: 20
  repost_list:
    description:
      - File to write, NUL-separated, the absolute source path (source manifest root + path) of
        every path with a difference the flow repairs when the path is posted again (V(missing),
        V(type), V(size), V(content), V(symlink_target), V(mode), V(mtime)). Paths in flight are
        left out. Not written when omitted.
    type: path
  delete_list:
    description:
      - File to write, NUL-separated, the absolute destination path of every V(extra) path not in
        flight. Not written when omitted.
    type: path
  stale_list:
    description:
      - File to write, NUL-separated, the absolute destination path of every regular file (on both
        sides) with a V(size), V(content), V(mtime) or V(mode) difference not in flight. sr3's copier
        overwrites an existing file only with a newer one, so a repair marks these stale first.
        Not written when omitted.
    type: path
  report:
    description:
      - File to write every difference to, one JSON object per line, in the same
        encoding as the manifests (see M(sr3.hpc_mirror.tree_manifest)).
      - Not written when omitted.
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Only reads the manifests. O(report) and the lists are written in check mode too, and changed is always false.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
seealso:
  - module: sr3.hpc_mirror.tree_manifest
"""

EXAMPLES = r"""
- name: Compare the mirror with its source
  sr3.hpc_mirror.manifest_compare:
    source: /var/tmp/primary.manifest
    destination: /var/tmp/secondary.manifest
    report: /var/tmp/mirror-differences.jsonl
  register: audit

- name: Fail when the mirror is out of sync
  ansible.builtin.assert:
    that: audit.in_sync
    fail_msg: "{{ audit.differences }} differences: {{ audit.counts }}"

- name: Only presence and content matter
  sr3.hpc_mirror.manifest_compare:
    source: /var/tmp/primary.manifest
    destination: /var/tmp/secondary.manifest
    checks: [missing, extra, type, size, content]

- name: Tolerate what changed in the last minute, and list what to repair
  sr3.hpc_mirror.manifest_compare:
    source: /var/tmp/primary.manifest
    destination: /var/tmp/secondary.manifest
    settle: 60
    repost_list: /var/tmp/repost.list
    delete_list: /var/tmp/delete.list
    stale_list: /var/tmp/stale.list
"""

RETURN = r"""
in_sync:
  description: Whether no difference was found in the enabled categories.
  returned: success
  type: bool
  sample: false
differences:
  description: Total number of differences (a path counts once per category).
  returned: success
  type: int
  sample: 3
counts:
  description: Number of differences per enabled category.
  returned: success
  type: dict
  sample: {"missing": 2, "extra": 0, "type": 0, "size": 1, "content": 1, "symlink_target": 0, "mode": 0, "mtime": 0,
           "unreadable": 0}
examples:
  description:
    - The first O(max_examples) differences in tree order.
    - Bytes of names that are not valid UTF-8 are shown as C(\xNN).
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Path relative to the root of the trees.
      type: str
      sample: run/2024/out.nc
    category:
      description: Category of the difference.
      type: str
      sample: size
    source:
      description: Value on the source side (type for V(missing), size, hash, mtime, target or mode otherwise).
      type: raw
      sample: 1024
    destination:
      description: Value on the destination side, null for V(missing).
      type: raw
      sample: 512
  sample: [{"path": "run/2024/out.nc", "category": "size", "source": 1024, "destination": 512}]
in_flight:
  description: Number of paths with differences tolerated as in flight (see O(settle)).
  returned: success
  type: int
  sample: 2
in_flight_examples:
  description: The first O(max_examples) paths in flight, with the C(categories) they would be in.
  returned: success
  type: list
  elements: dict
  sample: [{"path": "run/new.nc", "category": "in_flight", "categories": ["missing"], "source": "file",
            "destination": null}]
repost:
  description: Number of source paths written to O(repost_list) (0 when not written).
  returned: success
  type: int
  sample: 3
delete:
  description: Number of destination paths written to O(delete_list) (0 when not written).
  returned: success
  type: int
  sample: 0
stale:
  description: Number of destination paths written to O(stale_list) (0 when not written).
  returned: success
  type: int
  sample: 1
source_entries:
  description: Number of entries in the source manifest.
  returned: success
  type: int
  sample: 1250000
destination_entries:
  description: Number of entries in the destination manifest.
  returned: success
  type: int
  sample: 1249998
source_errors:
  description: Number of source entries that could not be fully read when the manifest was written.
  returned: success
  type: int
  sample: 0
destination_errors:
  description: Number of destination entries that could not be fully read when the manifest was written.
  returned: success
  type: int
  sample: 0
report:
  description: Path of the report file, when written.
  returned: when O(report) is set
  type: str
  sample: /var/tmp/mirror-differences.jsonl
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import (
    ALL_CHECKS,
    ManifestError,
    compare_manifests,
    printable,
)


def printable_example(diff):
    """Module results must be valid Unicode: show undecodable bytes as \\xNN."""
    return dict((k, printable(v) if isinstance(v, str) else v) for k, v in diff.items())


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type='path', required=True),
            destination=dict(type='path', required=True),
            checks=dict(type='list', elements='str', choices=list(ALL_CHECKS), default=list(ALL_CHECKS)),
            mtime_tolerance=dict(type='float', default=1.0),
            settle=dict(type='float', default=0),
            max_examples=dict(type='int', default=20),
            report=dict(type='path'),
            repost_list=dict(type='path'),
            delete_list=dict(type='path'),
            stale_list=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params['max_examples'] < 0:
        module.fail_json(msg='max_examples must be 0 or more, got %d' % params['max_examples'])
    if params['settle'] < 0:
        module.fail_json(msg='settle must be 0 or more, got %s' % params['settle'])
    if params['mtime_tolerance'] < 0:
        module.fail_json(msg='mtime_tolerance must be 0 or more, got %s' % params['mtime_tolerance'])
    try:
        result = compare_manifests(params['source'], params['destination'], checks=params['checks'],
                                   mtime_tolerance=params['mtime_tolerance'],
                                   max_examples=params['max_examples'], report=params['report'],
                                   settle=params['settle'], repost_list=params['repost_list'],
                                   delete_list=params['delete_list'], stale_list=params['stale_list'])
    except ManifestError as exc:
        module.fail_json(msg='invalid manifest: %s' % exc)
    except (IOError, OSError) as exc:
        module.fail_json(msg='cannot read manifests or write report: %s' % exc)
    for warning in result.pop('warnings'):
        module.warn(warning)
    result['examples'] = [printable_example(d) for d in result['examples']]
    result['in_flight_examples'] = [printable_example(d) for d in result['in_flight_examples']]
    if params['report']:
        result['report'] = params['report']
    # Differences are findings, not failures: the playbook decides.
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()

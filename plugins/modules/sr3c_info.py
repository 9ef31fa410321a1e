#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
module: sr3c_info
short_description: Find the sr3c (sarrac) shim library, sr3_cpost and their version
version_added: 0.2.0
description:
  - Looks for an installed sr3c on the host, either under O(prefix) (a build from
    source) or in the system library directories (C(/usr/lib64), C(/usr/lib), the
    multiarch directory, C(/usr/local/lib64), C(/usr/local/lib)) where the
    distribution packages put it.
  - The version of an installed sr3c is read from the name of the real file behind
    C(libsr3shim.so), for example C(libsr3shim.so.3.24.12).
  - Optionally reads the version of a source tree (first line of C(debian/changelog))
    and a digest of the files C(make) builds from, and the versions of local
    C(.deb) or C(.rpm) files.
  - Every version found is compared with O(minimum_version); release candidates
    (C(3.24.12rc1)) come before their release, patch releases (C(3.23.11p1)) after.
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
options:
  prefix:
    description:
      - Install prefix of an sr3c built from source; only C(<prefix>/lib),
        C(<prefix>/lib64) and C(<prefix>/bin) are searched.
      - Omit to search the system directories.
    type: path
  source:
    description:
      - An unpacked sr3c source tree (release tarball or checkout) to describe.
    type: path
  package_files:
    description:
      - Local C(.deb) or C(.rpm) files whose package name and version to read
        (with C(dpkg-deb) or C(rpm)).
    type: list
    elements: path
    default: []
  version:
    description:
      - A version string to compare with O(minimum_version), for example the candidate a package
        repository offers (C(1:3.24.12-1ubuntu1) is read as C(3.24.12)).
    type: str
  minimum_version:
    description: Oldest acceptable sr3c version.
    type: str
    default: "3.24.12"
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
notes:
  - Read-only; it never changes the host.
"""

EXAMPLES = r"""
- name: Find the sr3c built into the ops user's home
  sr3.hpc_mirror.sr3c_info:
    prefix: "{{ ansible_facts['user_dir'] }}/.local/share/hpc_mirror/sr3c"
  register: sr3c_found

- name: Version of a source tree
  sr3.hpc_mirror.sr3c_info:
    source: /tmp/sarrac-3.24.12
    minimum_version: "3.24.12"
  register: sr3c_src

- name: Refuse an old tree
  ansible.builtin.assert:
    that: sr3c_src.source.meets_minimum
    fail_msg: "sr3c {{ sr3c_src.source.version }} is older than 3.24.12"
"""

RETURN = r"""
installed:
  description: The installed sr3c found.
  returned: always
  type: dict
  contains:
    found:
      description: Whether a versioned C(libsr3shim.so.X.Y.Z) was found.
      type: bool
    version:
      description: Its version, or null.
      type: str
      sample: "3.24.12"
    library_path:
      description: Real path of the shim library, for C(LD_PRELOAD).
      type: str
      sample: /home/opsm/.local/share/hpc_mirror/sr3c/lib/libsr3shim.so.3.24.12
    library_dir:
      description: Directory of O(prefix) or the system where it was found.
      type: str
    cpost_path:
      description: Path of C(sr3_cpost), or null.
      type: str
    meets_minimum:
      description: Whether the version is at least O(minimum_version) (false when not found).
      type: bool
    searched:
      description: Library directories searched, in order.
      type: list
      elements: str
source:
  description: The source tree, when O(source) is given.
  returned: when O(source) is given
  type: dict
  contains:
    version:
      description: Version from C(debian/changelog).
      type: str
    digest:
      description: sha256 over the names and contents of the files make builds from.
      type: str
    files:
      description: Those files, relative to O(source).
      type: list
      elements: str
    meets_minimum:
      description: Whether the version is at least O(minimum_version).
      type: bool
version:
  description: O(version) normalized, and whether it meets O(minimum_version).
  returned: when O(version) is given
  type: dict
  contains:
    version:
      description: The version without epoch, C(v) or package revision.
      type: str
    meets_minimum:
      description: Whether it is at least O(minimum_version).
      type: bool
packages:
  description: One entry per O(package_files) item.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    name:
      description: Package name.
      type: str
    version:
      description: Upstream version (no epoch, no revision).
      type: str
    meets_minimum:
      description: Whether the version is at least O(minimum_version).
      type: bool
"""

import hashlib
import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.sr3c import (
    VersionError, find_cpost, find_library, library_dirs, normalize_version,
    source_files, version_at_least, version_from_changelog)


def describe_source(module, source, minimum):
    try:
        files = source_files(source)
        with open(os.path.join(source, 'debian', 'changelog')) as changelog:
            version = version_from_changelog(changelog.read())
    except (OSError, VersionError) as error:
        module.fail_json(msg='sr3c source %s: %s' % (source, error))
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b'\0')
        with open(os.path.join(source, name), 'rb') as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return dict(version=version, digest=digest.hexdigest(), files=files,
                meets_minimum=version_at_least(version, minimum))


def describe_package(module, path, minimum):
    if not os.path.isfile(path):
        module.fail_json(msg='sr3c package file %s does not exist' % path)
    if path.endswith('.deb'):
        command = [module.get_bin_path('dpkg-deb', required=True), '--show',
                   '--showformat=${Package}\\t${Version}', path]
    elif path.endswith('.rpm'):
        command = [module.get_bin_path('rpm', required=True), '-qp',
                   '--queryformat', '%{NAME}\\t%{VERSION}', path]
    else:
        module.fail_json(msg='sr3c package file %s is neither a .deb nor an .rpm' % path)
    rc, out, err = module.run_command(command)
    if rc != 0 or '\t' not in out:
        module.fail_json(msg='cannot read the package file %s: %s' % (path, (err or out).strip()))
    name, version = out.strip().split('\t', 1)
    try:
        version = normalize_version(version)
    except VersionError as error:
        module.fail_json(msg='package file %s: %s' % (path, error))
    return dict(path=path, name=name, version=version, meets_minimum=version_at_least(version, minimum))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type='path'),
            source=dict(type='path'),
            package_files=dict(type='list', elements='path', default=[]),
            version=dict(type='str'),
            minimum_version=dict(type='str', default='3.24.12'),
        ),
        supports_check_mode=True,
    )
    prefix = module.params['prefix']
    minimum = module.params['minimum_version']
    try:
        normalize_version(minimum)
    except VersionError as error:
        module.fail_json(msg='minimum_version: %s' % error)

    searched = library_dirs(prefix, getattr(sys.implementation, '_multiarch', None))
    library_path, version = find_library(searched)
    installed = dict(
        found=library_path is not None,
        version=version,
        library_path=library_path,
        library_dir=os.path.dirname(library_path) if library_path else None,
        cpost_path=find_cpost(library_path, prefix) if library_path else None,
        meets_minimum=bool(version) and version_at_least(version, minimum),
        searched=searched,
    )
    result = dict(changed=False, installed=installed,
                  packages=[describe_package(module, p, minimum) for p in module.params['package_files']])
    if module.params['version'] is not None:
        try:
            version = normalize_version(module.params['version'])
        except VersionError as error:
            module.fail_json(msg='version: %s' % error)
        result['version'] = dict(version=version, meets_minimum=version_at_least(version, minimum))
    if module.params['source']:
        result['source'] = describe_source(module, module.params['source'], minimum)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

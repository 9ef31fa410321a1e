# -*- coding: utf-8 -*-
# Copyright: (c) sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""sr3c (sarrac) versions and installed files, in plain Python for unit tests.

Facts taken from the sarrac sources (3.24.x):

* The version is the first line of ``debian/changelog``:
  ``metpx-sr3c (3.24.10) unstable; urgency=medium``. It is ``3.YY.MM``, with
  release candidates ``3.24.10rc2`` and patch releases ``3.23.11p1``.
* ``make install`` puts ``libsr3shim.so.<version>``, ``libsr3c.so.<version>``
  and their ``.so.3``/``.so`` links in ``build/lib``, and ``sr3_cpost`` and
  ``sr3_cpump`` in ``build/bin``; the library finds ``libsr3c`` through
  ``RUNPATH $ORIGIN/../lib``.
* The Debian package installs into ``/usr/lib`` (not the multiarch
  directory), the rpm into ``%{_libdir}`` (``/usr/lib64``), both with
  ``sr3_cpost`` in ``/usr/bin``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

LIBRARY = 'libsr3shim.so'
CPOST = 'sr3_cpost'

# 3.24.12, v3.24.12, 3.24.12rc1, 3.23.11p2, 1:3.24.12-1ubuntu1 (deb epoch and revision)
_VERSION_RE = re.compile(
    r'^(?:\d+:)?v?(?P<numbers>\d+(?:\.\d+){1,3})'
    r'(?:(?P<kind>rc|p)(?P<n>\d+))?'
    r'(?:[-~+][0-9A-Za-z.~+-]*)?\Z')
_CHANGELOG_RE = re.compile(r'^\S+\s+\(([^)]+)\)')
_LIBRARY_RE = re.compile(r'^libsr3shim\.so\.(\d+\.\d+\.\d+(?:(?:rc|p)\d+)?)\Z')
# A release candidate comes before its release, a patch release after it.
_KIND_ORDER = {'rc': -1, None: 0, 'p': 1}


class VersionError(ValueError):
    """A string that is not an sr3c version."""


def parse_version(text):
    """Return a comparable tuple for an sr3c version string.

    Raises VersionError for anything that is not a version.
    """
    if not isinstance(text, str):
        raise VersionError('not an sr3c version: %r' % (text,))
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise VersionError('not an sr3c version: %r' % (text,))
    numbers = tuple(int(n) for n in match.group('numbers').split('.'))
    numbers = numbers + (0,) * (4 - len(numbers))
    kind = match.group('kind')
    return numbers + (_KIND_ORDER[kind], int(match.group('n') or 0))


def normalize_version(text):
    """Version as sarrac writes it: no leading v, no epoch, no package revision."""
    parse_version(text)
    match = _VERSION_RE.match(text.strip())
    return match.group('numbers') + (match.group('kind') or '') + (match.group('n') or '')


def compare_versions(left, right):
    """-1, 0 or 1 as left is older than, equal to or newer than right."""
    a, b = parse_version(left), parse_version(right)
    return (a > b) - (a < b)


def version_at_least(version, minimum):
    return compare_versions(version, minimum) >= 0


def version_from_changelog(text):
    """The version on the first line of a debian/changelog."""
    for line in text.splitlines():
        if line.strip():
            match = _CHANGELOG_RE.match(line)
            if not match:
                raise VersionError('first line of debian/changelog carries no version: %r' % line)
            version = match.group(1)
            parse_version(version)
            return version
    raise VersionError('debian/changelog is empty')


def version_from_library_name(name):
    """3.24.10 for libsr3shim.so.3.24.10; None for the .so and .so.3 links."""
    match = _LIBRARY_RE.match(os.path.basename(name))
    return match.group(1) if match else None


def library_dirs(prefix=None, multiarch=None):
    """Directories searched for libsr3shim.so, most specific first.

    An install under a prefix (built from source) is looked for only there;
    otherwise the system directories of both distribution families.
    """
    if prefix:
        return [os.path.join(prefix, 'lib'), os.path.join(prefix, 'lib64')]
    dirs = ['/usr/lib64', '/usr/lib']
    if multiarch:
        dirs.append(os.path.join('/usr/lib', multiarch))
    dirs += ['/usr/local/lib64', '/usr/local/lib']
    return dirs


def find_library(dirs):
    """The newest versioned libsr3shim.so.X.Y.Z in dirs, as a real path.

    Returns (path, version), or (None, None) when there is none. The version
    comes from the file name the symlinks (.so, .so.3) point to.
    """
    best = None
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.startswith(LIBRARY):
                continue
            path = os.path.realpath(os.path.join(directory, name))
            version = version_from_library_name(path)
            if version is None or not os.path.isfile(path):
                continue
            key = parse_version(version)
            if best is None or key > best[0]:
                best = (key, path, version)
    if best is None:
        return None, None
    return best[1], best[2]


def find_cpost(library_path, prefix=None):
    """sr3_cpost of an install: <prefix>/bin only, or else ../bin of the library, /usr/bin, /usr/local/bin."""
    if prefix:
        candidates = [os.path.join(prefix, 'bin', CPOST)]
    else:
        candidates = ['/usr/bin/' + CPOST, '/usr/local/bin/' + CPOST]
        if library_path:
            candidates.insert(0, os.path.join(os.path.dirname(os.path.dirname(library_path)), 'bin', CPOST))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def source_files(source_dir):
    """Relative paths of the files make needs to build and install sr3c.

    The top-level C sources and headers, the Makefile and debian/changelog
    (which carries the version); generated sr_version.h is left out. Build
    outputs lying in a source directory do not count.
    """
    names = []
    for name in sorted(os.listdir(source_dir)):
        if name == 'sr_version.h':
            continue
        if name.endswith(('.c', '.h')) or name == 'Makefile':
            if os.path.isfile(os.path.join(source_dir, name)):
                names.append(name)
    if 'Makefile' not in names or not any(n.endswith('.c') for n in names):
        raise VersionError('%s is not an sr3c source tree (no Makefile or C sources)' % source_dir)
    changelog = os.path.join('debian', 'changelog')
    if not os.path.isfile(os.path.join(source_dir, changelog)):
        raise VersionError('%s is not an sr3c source tree (no debian/changelog)' % source_dir)
    names.append(changelog)
    return names

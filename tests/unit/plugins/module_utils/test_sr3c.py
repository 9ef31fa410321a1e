# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sr3c versions (parsing, ordering, the floor) and finding the installed library."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils import sr3c


@pytest.mark.parametrize('older, newer', [
    ('3.24.10', '3.24.12'),
    ('3.24.12rc1', '3.24.12'),
    ('3.24.12rc1', '3.24.12rc2'),
    ('3.24.12', '3.24.12p1'),
    ('3.23.11p2', '3.24.02'),
    ('3.24.9', '3.24.10'),      # numeric, not string, order
    ('2.99.99', '3.0.0'),
    ('3.24.12', '3.25.01'),
    ('3.24.12', '3.24.12.1'),
])
def test_order(older, newer):
    assert sr3c.compare_versions(older, newer) == -1
    assert sr3c.compare_versions(newer, older) == 1
    assert not sr3c.version_at_least(older, newer)
    assert sr3c.version_at_least(newer, older)


@pytest.mark.parametrize('text, normal', [
    ('3.24.12', '3.24.12'),
    ('v3.24.12', '3.24.12'),
    ('3.24.12-1', '3.24.12'),
    ('1:3.24.12-1ubuntu1', '3.24.12'),
    ('3.24.12~ppa1', '3.24.12'),
    ('3.24.10rc2', '3.24.10rc2'),
    (' 3.23.11p1\n', '3.23.11p1'),
])
def test_normalize(text, normal):
    assert sr3c.normalize_version(text) == normal
    assert sr3c.compare_versions(text, normal) == 0


@pytest.mark.parametrize('text', ['', '3', 'three.24.12', '3.24.12beta', 'latest', None, 3.24])
def test_not_a_version(text):
    with pytest.raises(sr3c.VersionError):
        sr3c.parse_version(text)


def test_floor():
    assert sr3c.version_at_least('3.24.12', '3.24.12')
    assert not sr3c.version_at_least('3.24.10', '3.24.12')
    assert not sr3c.version_at_least('3.24.12rc3', '3.24.12')


def test_version_from_changelog():
    text = 'metpx-sr3c (3.24.10) unstable; urgency=medium\n\n  * fixes\n'
    assert sr3c.version_from_changelog(text) == '3.24.10'
    assert sr3c.version_from_changelog('\nmetpx-sr3c (3.24.12rc1) UNRELEASED; urgency=low\n') == '3.24.12rc1'
    with pytest.raises(sr3c.VersionError):
        sr3c.version_from_changelog('no version here\n')
    with pytest.raises(sr3c.VersionError):
        sr3c.version_from_changelog('metpx-sr3c (next) unstable\n')
    with pytest.raises(sr3c.VersionError):
        sr3c.version_from_changelog('\n\n')


@pytest.mark.parametrize('name, version', [
    ('libsr3shim.so.3.24.12', '3.24.12'),
    ('/usr/lib64/libsr3shim.so.3.24.12rc1', '3.24.12rc1'),
    ('libsr3shim.so.3', None),
    ('libsr3shim.so', None),
    ('libsr3c.so.3.24.12', None),
])
def test_version_from_library_name(name, version):
    assert sr3c.version_from_library_name(name) == version


def test_library_dirs():
    assert sr3c.library_dirs('/home/u/sr3c') == ['/home/u/sr3c/lib', '/home/u/sr3c/lib64']
    system = sr3c.library_dirs(None, 'x86_64-linux-gnu')
    # rpm (/usr/lib64) and deb (/usr/lib) locations, then multiarch and /usr/local.
    assert system[:3] == ['/usr/lib64', '/usr/lib', '/usr/lib/x86_64-linux-gnu']
    assert '/usr/local/lib' in system
    assert '/usr/lib/None' not in sr3c.library_dirs(None, None)


def make_install(root, version, libdir='lib', links=True):
    """The files make install or a package leaves: the library, its links, sr3_cpost."""
    lib = root / libdir
    lib.mkdir(parents=True, exist_ok=True)
    (lib / ('libsr3shim.so.' + version)).write_bytes(b'\x7fELF')
    (lib / ('libsr3c.so.' + version)).write_bytes(b'\x7fELF')
    if links:
        for link in ('libsr3shim.so', 'libsr3shim.so.3'):
            if os.path.lexists(str(lib / link)):
                os.unlink(str(lib / link))
            os.symlink('libsr3shim.so.' + version, str(lib / link))
    (root / 'bin').mkdir(exist_ok=True)
    cpost = root / 'bin' / 'sr3_cpost'
    cpost.write_text(u'#!/bin/sh\n')
    cpost.chmod(0o755)
    return lib


def test_find_library_in_a_prefix(tmp_path):
    make_install(tmp_path, '3.24.12')
    path, version = sr3c.find_library(sr3c.library_dirs(str(tmp_path)))
    assert path == str(tmp_path / 'lib' / 'libsr3shim.so.3.24.12')
    assert version == '3.24.12'
    assert sr3c.find_cpost(path, str(tmp_path)) == str(tmp_path / 'bin' / 'sr3_cpost')


def test_find_library_lib64_and_newest(tmp_path):
    make_install(tmp_path, '3.24.12', libdir='lib64', links=False)
    make_install(tmp_path, '3.24.12rc1', libdir='lib')
    path, version = sr3c.find_library(sr3c.library_dirs(str(tmp_path)))
    assert (path, version) == (str(tmp_path / 'lib64' / 'libsr3shim.so.3.24.12'), '3.24.12')


def test_find_library_follows_links_and_ignores_dangling(tmp_path):
    lib = tmp_path / 'lib'
    lib.mkdir()
    os.symlink('libsr3shim.so.3.24.99', str(lib / 'libsr3shim.so'))  # dangling
    assert sr3c.find_library([str(lib)]) == (None, None)
    assert sr3c.find_library([str(tmp_path / 'missing')]) == (None, None)
    make_install(tmp_path, '3.24.12', links=False)
    assert sr3c.find_library([str(lib)])[1] == '3.24.12'


def test_find_cpost_in_a_prefix_only(tmp_path):
    (tmp_path / 'lib').mkdir()
    assert sr3c.find_cpost(str(tmp_path / 'lib' / 'libsr3shim.so.3.24.12'), str(tmp_path)) is None


def test_source_files(tmp_path):
    (tmp_path / 'debian').mkdir()
    (tmp_path / 'debian' / 'changelog').write_text(u'metpx-sr3c (3.24.12) unstable; urgency=medium\n')
    for name in ('Makefile', 'libsr3shim.c', 'sr_post.h', 'sr_version.h', 'sr_post.o', 'libsr3c.so.3.24.12'):
        (tmp_path / name).write_text(u'x')
    assert sr3c.source_files(str(tmp_path)) == ['Makefile', 'libsr3shim.c', 'sr_post.h', 'debian/changelog']
    os.unlink(str(tmp_path / 'Makefile'))
    with pytest.raises(sr3c.VersionError, match='not an sr3c source tree'):
        sr3c.source_files(str(tmp_path))

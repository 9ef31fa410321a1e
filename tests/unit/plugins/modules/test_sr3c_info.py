# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the sr3c_info module's main() on real trees and package files."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import shutil
import subprocess

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.modules import sr3c_info


@pytest.fixture
def run(run_module):
    return functools.partial(run_module, sr3c_info)


def source_tree(root, version):
    (root / 'debian').mkdir(parents=True)
    (root / 'debian' / 'changelog').write_text(u'metpx-sr3c (%s) unstable; urgency=medium\n' % version)
    (root / 'Makefile').write_text(u'all:\n')
    (root / 'libsr3shim.c').write_text(u'int x;\n')
    return root


def test_source_version_digest_and_floor(run, tmp_path):
    tree = source_tree(tmp_path / 'src', '3.24.10')
    result = run(source=str(tree), minimum_version='3.24.12')
    assert result['source']['version'] == '3.24.10'
    assert result['source']['meets_minimum'] is False
    assert result['source']['files'] == ['Makefile', 'libsr3shim.c', 'debian/changelog']
    digest = result['source']['digest']
    # Build outputs do not change the digest; a source change does.
    (tree / 'sr_post.o').write_text(u'object')
    assert run(source=str(tree))['source']['digest'] == digest
    (tree / 'libsr3shim.c').write_text(u'int y;\n')
    assert run(source=str(tree))['source']['digest'] != digest
    assert run(source=str(tree), minimum_version='3.24.10')['source']['meets_minimum'] is True


def test_not_a_source_tree(run, tmp_path):
    result = run(source=str(tmp_path))
    assert result['failed'] and 'not an sr3c source tree' in result['msg']


def test_installed_under_a_prefix(run, tmp_path):
    result = run(prefix=str(tmp_path))
    assert result['installed']['found'] is False
    assert result['installed']['meets_minimum'] is False
    lib = tmp_path / 'lib'
    lib.mkdir()
    (lib / 'libsr3shim.so.3.24.12').write_bytes(b'\x7fELF')
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'bin' / 'sr3_cpost').write_text(u'#!/bin/sh\n')
    (tmp_path / 'bin' / 'sr3_cpost').chmod(0o755)
    installed = run(prefix=str(tmp_path))['installed']
    assert installed['found'] and installed['meets_minimum']
    assert installed['library_path'] == str(lib / 'libsr3shim.so.3.24.12')
    assert installed['cpost_path'] == str(tmp_path / 'bin' / 'sr3_cpost')
    assert installed['searched'] == [str(lib), str(tmp_path / 'lib64')]


def test_version_option(run):
    assert run(version='1:3.24.12-1ubuntu1')['version'] == {'version': '3.24.12', 'meets_minimum': True}
    assert run(version='3.24.12rc1')['version']['meets_minimum'] is False
    assert 'not an sr3c version' in run(version='newest')['msg']
    assert 'minimum_version' in run(minimum_version='x')['msg']


@pytest.mark.skipif(not shutil.which('dpkg-deb'), reason='dpkg-deb is not installed')
def test_deb_package_file(run, tmp_path):
    package = tmp_path / 'pkg'
    (package / 'DEBIAN').mkdir(parents=True)
    (package / 'DEBIAN' / 'control').write_text(
        u'Package: metpx-sr3c\nVersion: 3.24.10-1\nArchitecture: all\nMaintainer: t <t@example.org>\n'
        u'Description: test\n')
    deb = tmp_path / 'metpx-sr3c_3.24.10-1_all.deb'
    subprocess.run(['dpkg-deb', '--build', str(package), str(deb)], check=True, capture_output=True)
    result = run(package_files=[str(deb)], minimum_version='3.24.12')
    assert result['packages'] == [
        {'path': str(deb), 'name': 'metpx-sr3c', 'version': '3.24.10', 'meets_minimum': False}]


def test_bad_package_files(run, tmp_path):
    assert 'does not exist' in run(package_files=[str(tmp_path / 'none.deb')])['msg']
    other = tmp_path / 'sr3c.tar.gz'
    other.write_bytes(b'')
    assert 'neither a .deb nor an .rpm' in run(package_files=[str(other)])['msg']

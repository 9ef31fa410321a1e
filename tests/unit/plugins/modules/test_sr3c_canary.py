# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sr3c_canary: reading notification messages, and the checks made before any broker work."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import json

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.modules import sr3c_canary


@pytest.fixture
def run(run_module):
    return functools.partial(run_module, sr3c_canary, exchanges=['xs_u_x00'], broker_host='localhost',
                             broker_user='u', broker_password='secret-pw')


def test_v03_message_path_and_event():
    body = json.dumps({'baseUrl': 'file:/', 'relPath': 'var/tmp/primary/f', 'fileOp': {'remove': ''}})
    path, message = sr3c_canary.message_path(body.encode())
    assert path == '/var/tmp/primary/f'
    assert sr3c_canary.event_of(message) == 'remove'
    body = json.dumps({'baseUrl': 'file:/var/tmp', 'relPath': '/primary/f', 'size': '0'})
    path, message = sr3c_canary.message_path(body)
    assert path == '/var/tmp/primary/f'
    assert sr3c_canary.event_of(message) == 'create'


def test_v02_and_garbage():
    assert sr3c_canary.message_path(b'20241124 file:/ var/tmp/f')[0] == '/var/tmp/f'
    assert sr3c_canary.message_path(b'\xff\xfe') == (None, None)
    assert sr3c_canary.message_path(b'[1, 2]') == (None, None)
    assert sr3c_canary.message_path(b'x') == (None, None)


def test_missing_wrapper_fails_before_the_broker(run, tmp_path):
    result = run(directory=str(tmp_path), wrapper=str(tmp_path / 'hpc_mirror_shim'))
    assert result['failed'] and 'wrapper' in result['msg'] and 'missing' in result['msg']
    assert 'secret-pw' not in json.dumps(result)


def test_missing_directory(run, tmp_path):
    result = run(directory=str(tmp_path / 'nowhere'), wrapper='/bin/true')
    assert result['failed'] and 'does not exist' in result['msg']


def test_check_mode_writes_nothing(run, tmp_path):
    result = run(directory=str(tmp_path), wrapper='/bin/true', _ansible_check_mode=True)
    assert result['posted'] is None and not result['changed']
    assert list(tmp_path.iterdir()) == []

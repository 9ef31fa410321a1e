# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sr3_config in check mode on a host where sr3 is not installed yet.

The rest of the module runs against real sr3 and RabbitMQ in
tests/integration/test_sr3_config.py.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.modules import sr3_config

CONFIGS = ['winnow/mirror_primary_to_secondary_00', 'sarra/mirror_primary_to_secondary_copy']


@pytest.fixture
def run(run_module, tmp_path, monkeypatch):
    # A fresh user: no sr3 venv, no configs.
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('XDG_CONFIG_HOME', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    return functools.partial(run_module, sr3_config, sr3=str(tmp_path / 'venv' / 'bin' / 'sr3'), configs=CONFIGS)


@pytest.mark.parametrize('state, action, changed', [
    ('started', 'started', True),
    ('declared', 'declared', True),
    ('restarted', 'started', True),
    ('stopped', 'none', False),
])
def test_check_mode_before_install_reports_a_first_run(run, state, action, changed):
    result = run(state=state, _ansible_check_mode=True)
    assert not result.get('failed'), result
    assert result['changed'] is changed
    assert [result['configs'][name]['action'] for name in CONFIGS] == [action, action]
    assert result['commands'] == []
    # ansible-core 2.19 returns warnings as structured summaries, older ones as strings.
    assert 'not installed yet' in str(result.get('warnings'))


def test_missing_sr3_fails_outside_check_mode(run):
    result = run(state='started')
    assert result['failed']
    assert 'sr3 executable not found' in result['msg']

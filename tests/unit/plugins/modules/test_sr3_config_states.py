# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sr3_config present and absent where no sr3 is needed.

With sr3 and RabbitMQ: tests/integration/test_sr3_config.py.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.modules import sr3_config

NAME = 'shovel/m_tally'


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('XDG_CONFIG_HOME', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    return tmp_path


@pytest.fixture
def run(run_module, home):
    return functools.partial(run_module, sr3_config, sr3=str(home / 'venv' / 'bin' / 'sr3'), configs=[NAME])


def leftovers(home):
    state = home / '.cache' / 'sr3' / 'shovel' / 'm_tally'
    state.mkdir(parents=True)
    (state / 'shovel_m_tally_01.pid').write_text('0\n')
    metrics = home / '.cache' / 'sr3' / 'metrics'
    metrics.mkdir(parents=True)
    (metrics / 'shovel_m_tally_01.json').write_text('{}\n')
    (metrics / 'shovel_m_tally_01.json.20261124').write_text('"x": {},\n')
    other = metrics / 'shovel_m_tally_more_01.json'
    other.write_text('{}\n')
    return state, metrics, other


def test_absent_without_anything_is_unchanged(run):
    result = run(state='absent')
    assert not result.get('failed'), result
    assert result['changed'] is False
    assert result['configs'][NAME]['action'] == 'none'


@pytest.mark.parametrize('check', [True, False])
def test_absent_removes_state_and_metrics_left_without_a_config(run, home, check):
    state, metrics, other = leftovers(home)
    result = run(state='absent', _ansible_check_mode=check, _ansible_diff=True)
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert result['configs'][NAME]['action'] == 'removed'
    assert result['diff']['after'][NAME] == {'present': False, 'running': 0}
    assert state.exists() is check
    assert (metrics / 'shovel_m_tally_01.json').exists() is check
    assert (metrics / 'shovel_m_tally_01.json.20261124').exists() is check
    assert other.exists(), 'metrics of another config were removed'


def test_absent_needs_sr3_to_clean_up_an_existing_config(run, home):
    conf = home / '.config' / 'sr3' / 'shovel' / 'm_tally.conf'
    conf.parent.mkdir(parents=True)
    conf.write_text('instances 1\n')
    result = run(state='absent')
    assert result.get('failed') is True
    assert 'sr3 executable not found' in result['msg']
    assert conf.exists()


def test_present_in_check_mode_before_install_changes_nothing(run):
    result = run(state='present', _ansible_check_mode=True)
    assert not result.get('failed'), result
    assert result['changed'] is False

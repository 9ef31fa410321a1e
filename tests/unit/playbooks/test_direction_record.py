# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The direction record's outage window ("since"), through the real playbooks
(reach.yml, tasks/record_direction.yml) on local hosts: records written before it
existed read as 0, a failover records it, later writes of the same generation
keep it, and the forward direction writes 0."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLAYBOOK = """
- name: Read
  ansible.builtin.import_playbook: {root}/playbooks/reach.yml

- name: Write
  hosts: mirror_primary:mirror_secondary
  gather_facts: false
  tasks:
    - name: Record
      ansible.builtin.include_tasks: {root}/playbooks/tasks/record_direction.yml
      vars:
        record_direction: "{{{{ write_direction }}}}"
        record_generation: "{{{{ write_generation }}}}"
      when: write_direction is defined

- name: Show
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Show what was read
      ansible.builtin.debug:
        msg: "READ {{{{ mirror_recorded_direction }}}} {{{{ mirror_recorded_generation }}}} {{{{ mirror_recorded_since }}}}"
"""


@pytest.fixture
def bed(tmp_path):
    record = tmp_path / "direction.json"
    inventory = tmp_path / "hosts.yml"
    hosts = dict((name, {"ansible_connection": "local", "ansible_python_interpreter": sys.executable})
                 for name in ("b", "p", "s"))
    inventory.write_text(json.dumps({"all": {
        "vars": {"hpc_mirror_direction_file": str(record)},
        "children": {"mirror_broker": {"hosts": {"b": hosts["b"]}},
                     "mirror_primary": {"hosts": {"p": hosts["p"]}},
                     "mirror_secondary": {"hosts": {"s": hosts["s"]}}}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(root=ROOT))

    def run(*extra):
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        result = subprocess.run(["ansible-playbook", "-i", str(inventory), str(playbook)] + list(extra),
                                capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        line = [x for x in result.stdout.splitlines() if "READ " in x and "msg" in x][0]
        return line.split("READ ")[1].strip('"\' ').split(), result.stdout
    return record, run


def test_old_record_reads_as_zero_and_since_is_kept(bed):
    record, run = bed
    record.write_text('{"direction": "primary_to_secondary", "generation": 3}\n')
    read = run()[0]
    assert read == ["primary_to_secondary", "3", "0.0"]
    # A failover records its window...
    run("-e", "write_direction=secondary_to_primary", "-e", "write_generation=4", "-e", "record_since=1765117000.7")
    assert json.loads(record.read_text()) == {"direction": "secondary_to_primary", "generation": 4,
                                              "since": 1765117000}
    # ...a later write of the same generation (deploy.yml) keeps it, changing nothing...
    read, out = run("-e", "write_direction=secondary_to_primary", "-e", "write_generation=4")
    assert read == ["secondary_to_primary", "4", "1765117000.0"]
    assert json.loads(record.read_text())["since"] == 1765117000 and "changed=1" not in out
    # ...and the forward direction has none.
    run("-e", "write_direction=primary_to_secondary", "-e", "write_generation=5")
    assert json.loads(record.read_text()) == {"direction": "primary_to_secondary", "generation": 5, "since": 0}

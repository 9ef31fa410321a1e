# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The authorized_keys lines of the sftp_access role, rendered through Ansible's
templating from the role's own task and defaults: every copier key restricted to
sftp, from= only when addresses are given, and the block marker remove.yml uses
(the role's remove tasks) the same as the one deploy writes."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLE = os.path.join(ROOT, "roles", "sftp_access")
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne hpc_mirror@hpc2n1",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo hpc_mirror@hpc2n2"]


def load(*path):
    with open(os.path.join(ROLE, *path)) as f:
        return yaml.safe_load(f)


def task(tasks_file, name):
    return next(t for t in load("tasks", tasks_file) if t["name"] == name)


def render(template, **variables):
    # role defaults are templates, as Ansible reads them
    defaults = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in load("defaults", "main.yml").items()}
    values = dict(defaults, sftp_access_source_alias="hpc1any")
    values.update(variables)
    templar = Templar(loader=DataLoader(), variables=values)
    return templar.template(trust_as_template(template))


BLOCK = task("main.yml", "Authorize the copiers' keys on every source host, restricted to sftp")["ansible.builtin.blockinfile"]


@pytest.mark.parametrize("patterns, options", [
    ([], 'restrict,command="internal-sftp"'),
    (["10.199.77.21"], 'restrict,command="internal-sftp",from="10.199.77.21"'),
    (["10.1.0.0/16", "10.199.77.22"], 'restrict,command="internal-sftp",from="10.1.0.0/16,10.199.77.22"'),
])
def test_each_key_is_restricted_to_sftp(patterns, options):
    block = render(BLOCK["block"], sftp_access_copier_keys=KEYS, sftp_access_from_patterns=patterns)
    assert block.splitlines() == ["%s %s" % (options, key) for key in KEYS]


def test_the_defaults_restrict_to_internal_sftp_with_no_shell():
    options = load("defaults", "main.yml")["sftp_access_key_options"]
    assert options.split(",")[0] == "restrict"
    assert 'command="internal-sftp"' in options.split(",")


def test_remove_uses_the_marker_deploy_writes():
    written = render(BLOCK["marker"])
    removed = task("remove.yml", "Remove the copiers' keys from authorized_keys")["ansible.builtin.blockinfile"]
    assert render(removed["marker"]) == written
    assert removed["state"] == "absent"
    # an sshd comment line (authorized_keys ignores lines starting with #), naming the alias
    assert written.startswith("# {mark} ") and "hpc1any" in written


def test_the_marker_differs_per_alias():
    marker = BLOCK["marker"]
    assert render(marker) != render(marker, sftp_access_source_alias="hpc2any")

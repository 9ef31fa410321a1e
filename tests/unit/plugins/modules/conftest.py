"""Run modules as on a target host.

Importing Ansible's controller code anywhere in the session (filters, templar)
sets a process-wide flag that sends AnsibleModule.warn() to the controller's
display instead of the module result; modules under test must not see it.
"""
import pytest

from ansible.module_utils import _internal


@pytest.fixture(autouse=True)
def _module_side(monkeypatch):
    monkeypatch.setattr(_internal, "is_controller", False)

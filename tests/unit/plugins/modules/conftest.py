"""Run modules as on a target host.

Importing Ansible's controller code anywhere in the session (filters, templar)
sets a process-wide flag that sends AnsibleModule.warn() to the controller's
display instead of the module result; modules under test must not see it.
"""
import json

import pytest

from ansible.module_utils import _internal
from ansible.module_utils.testing import patch_module_args


@pytest.fixture(autouse=True)
def _module_side(monkeypatch):
    monkeypatch.setattr(_internal, "is_controller", False)


@pytest.fixture
def run_module(capsys):
    """Run a module's main() with the given arguments; return its JSON result."""
    def run(module, **args):
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                module.main()
        return json.loads(capsys.readouterr().out)
    return run

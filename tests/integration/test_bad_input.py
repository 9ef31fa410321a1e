"""Bad deployment settings fail before any change, naming the variable.

Runs the real deploy playbook against a throwaway inventory of this machine;
every case must stop in the first play (the settings check), so nothing is
installed, written or started.
"""
import os
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "s3cret:Pass/word@x"

GOOD = {
    "hpc_mirror_broker_host": "localhost",
    "hpc_mirror_broker_user": "opsm",
    "hpc_mirror_broker_password": PASSWORD,
    "hpc_mirror_primary_dir": "/var/tmp/hpc_mirror_badinput/primary",
    "hpc_mirror_secondary_dir": "/var/tmp/hpc_mirror_badinput/secondary",
}


def run_deploy(tmp_path, overrides, remove=(), verbose=False,
               groups=("mirror_broker", "mirror_primary", "mirror_secondary")):
    settings = dict(GOOD, **overrides)
    for name in remove:
        settings.pop(name)
    inventory = {
        "all": {
            "children": {group: {"hosts": {"localhost": None}}
                         for group in groups},
            "vars": dict(settings, ansible_connection="local",
                         ansible_python_interpreter="{{ ansible_playbook_python }}"),
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    command = ["ansible-playbook", "-i", str(path), "deploy.yml"] + (["-vvv"] if verbose else [])
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    return result.returncode, result.stdout + result.stderr


CASES = [
    ("missing password", {}, ["hpc_mirror_broker_password"], "hpc_mirror_broker_password"),
    ("empty password", {"hpc_mirror_broker_password": ""}, [], "hpc_mirror_broker_password"),
    ("same trees", {"hpc_mirror_secondary_dir": GOOD["hpc_mirror_primary_dir"]}, [], "hpc_mirror_secondary_dir"),
    ("destination inside source", {"hpc_mirror_secondary_dir": GOOD["hpc_mirror_primary_dir"] + "/copy"}, [],
     "hpc_mirror_primary_dir"),
    ("source inside destination", {"hpc_mirror_primary_dir": GOOD["hpc_mirror_secondary_dir"] + "/src/"}, [],
     "hpc_mirror_secondary_dir"),
    ("relative primary", {"hpc_mirror_primary_dir": "fs/primary"}, [], "hpc_mirror_primary_dir must be an absolute"),
    ("relative secondary", {"hpc_mirror_secondary_dir": "./secondary"}, [],
     "hpc_mirror_secondary_dir must be an absolute"),
    ("no winnow", {"hpc_mirror_winnows": 0}, [], "hpc_mirror_winnows must be at least 1"),
    ("no copier", {"hpc_mirror_copy_instances": 0}, [], "hpc_mirror_copy_instances must be at least 1"),
    ("negative hold", {"hpc_mirror_hold": -1}, [], "hpc_mirror_hold must be at least 0"),
    ("unknown event source", {"hpc_mirror_event_source": "inotify"}, [], "hpc_mirror_event_source"),
    ("unknown transport", {"hpc_mirror_transport": "rsync"}, [], "hpc_mirror_transport"),
    ("winnows not a number", {"hpc_mirror_winnows": "five"}, [], "hpc_mirror_winnows"),
    ("sftp without aliases", {"hpc_mirror_transport": "sftp"}, [],
     "hpc_mirror_transport sftp needs hpc_mirror_primary_alias and hpc_mirror_secondary_alias"),
    ("control host not in the inventory", {"hpc_mirror_control_host": "hpc9n9"}, [], "hpc_mirror_control_host"),
    ("copier hosts not in the inventory", {"hpc_mirror_copier_hosts": ["hpc9n9"]}, [], "hpc_mirror_copier_hosts"),
    ("shim on a named vhost", {"hpc_mirror_event_source": "shim", "hpc_mirror_broker_vhost": "hpc"}, [],
     "hpc_mirror_broker_vhost must be / with hpc_mirror_event_source shim"),
    # sr3c does not decode a URL-encoded password (PASSWORD has : / @)
    ("shim with a password sr3c cannot use", {"hpc_mirror_event_source": "shim"}, [],
     "hpc_mirror_broker_password must be only letters, digits and . _ ~ - with hpc_mirror_event_source shim"),
    ("cpost daemon with a password sr3c cannot use", {"hpc_mirror_event_source": "cpost"}, [],
     "hpc_mirror_broker_password must be only letters, digits and . _ ~ - with hpc_mirror_event_source cpost"),
    ("cpost daemon on a named vhost", {"hpc_mirror_event_source": "cpost", "hpc_mirror_broker_vhost": "hpc",
                                       "hpc_mirror_broker_password": "plain-Pass.1"}, [],
     "hpc_mirror_broker_vhost must be / with hpc_mirror_event_source cpost"),
    ("cpost daemon sleep 1 s", {"hpc_mirror_event_source": "cpost", "hpc_mirror_cpost_sleep": 1,
                                "hpc_mirror_broker_password": "plain-Pass.1"}, [],
     "hpc_mirror_cpost_sleep must be at least 2"),
    ("cpost daemon sleep not whole seconds", {"hpc_mirror_event_source": "cpost", "hpc_mirror_cpost_sleep": "0.5",
                                              "hpc_mirror_broker_password": "plain-Pass.1"}, [],
     "hpc_mirror_cpost_sleep"),
]


@pytest.mark.parametrize("overrides, remove, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_setting_fails_before_any_change(tmp_path, overrides, remove, expected):
    rc, output = run_deploy(tmp_path, overrides, remove)
    assert rc != 0, output[-2000:]
    assert expected in output, output[-3000:]
    # The first play is the only one that ran: nothing was installed or started.
    assert "PLAY [Broker objects]" not in output
    assert not os.path.exists("/var/tmp/hpc_mirror_badinput")


def test_no_secret_in_verbose_failure(tmp_path):
    rc, output = run_deploy(tmp_path, {"hpc_mirror_winnows": 0}, verbose=True)
    assert rc != 0
    assert "hpc_mirror_winnows must be at least 1" in output
    assert PASSWORD not in output
    assert "s3cret%3APass%2Fword%40x" not in output


def test_no_secret_in_verbose_password_refusal(tmp_path):
    rc, output = run_deploy(tmp_path, {"hpc_mirror_event_source": "shim"}, verbose=True)
    assert rc != 0
    assert "hpc_mirror_broker_password must be only letters" in output
    assert PASSWORD not in output
    assert "s3cret%3APass%2Fword%40x" not in output


@pytest.mark.parametrize("missing", ["mirror_primary", "mirror_secondary", "mirror_broker"])
def test_inventory_without_a_side_fails_first(tmp_path, missing):
    groups = [g for g in ("mirror_broker", "mirror_primary", "mirror_secondary") if g != missing]
    rc, output = run_deploy(tmp_path, {}, groups=groups)
    assert rc != 0, output[-2000:]
    assert "has no host in group %s" % missing in output, output[-3000:]
    assert "PLAY [Check the deployment settings]" not in output
    assert not os.path.exists("/var/tmp/hpc_mirror_badinput")

"""Access to the namespace test bed's hosts for the tests, over the same ssh
(key, known_hosts) the deployment uses."""

import json
import os
import time

import testinfra
import yaml

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = "/var/tmp/hpc_mirror_testbed"
ADDRESSES = {"broker": "10.199.77.10", "hpc1n1": "10.199.77.11", "hpc1n2": "10.199.77.12",
             "hpc2n1": "10.199.77.21", "hpc2n2": "10.199.77.22"}
USER = "opsM"
HOME = "/home/" + USER  # testinfra quotes file paths: '~' would not be expanded
# The block of the copiers' keys that sftp_access writes in the source nodes' authorized_keys.
KEYS_BEGIN = "# BEGIN sr3.hpc_mirror: copier keys, sftp from hpc1any"
KEYS_END = "# END sr3.hpc_mirror: copier keys, sftp from hpc1any"


def group_vars():
    with open(os.path.join(SCENARIO, "inventory", "group_vars", "all", "main.yml")) as f:
        return yaml.safe_load(f)


def node(name, user=USER):
    """A testinfra host reached over ssh with the test bed's controller key."""
    return testinfra.get_host(
        "ssh://%s@%s" % (user, ADDRESSES[name]),
        ssh_identity_file=os.path.join(ROOT, "controller", "id_ed25519"),
        ssh_extra_args="-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes"
        % os.path.join(ROOT, "controller", "known_hosts"))


TREE_STATE = r'''
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n); r = os.path.relpath(p, root); st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode): out[r] = ["link", os.readlink(p)]
        elif stat.S_ISDIR(st.st_mode): out[r] = ["dir", ""]
        else:
            with open(p, "rb") as f:
                out[r] = ["file", st.st_size, hashlib.sha256(f.read()).hexdigest()]
print(json.dumps(out, sort_keys=True))
'''


def tree_state(host, root):
    """Relative path -> (type, size and sha256, or link target) of every entry."""
    result = host.run("python3 -c %s %s", TREE_STATE, root)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def wait_until_equal(source_host, source_root, destination_host, destination_root, timeout=180):
    deadline = time.time() + timeout
    while True:
        source = tree_state(source_host, source_root)
        destination = tree_state(destination_host, destination_root)
        if source == destination or time.time() > deadline:
            return source, destination
        time.sleep(2)


def authorized_lines(host):
    return host.file(HOME + "/.ssh/authorized_keys").content_string.splitlines()


def copier_keys(hpc2n1):
    """The public key (base64 part) the copiers of hpc2 use."""
    return {hpc2n1.file(HOME + "/.ssh/id_hpc_mirror.pub").content_string.split()[1]}

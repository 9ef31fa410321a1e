"""sr3 flow callback: check sftp host keys against known_hosts (shipped by sr3.hpc_mirror).

sr3 3.3.1 connects to sftp servers with paramiko's AutoAddPolicy and loads no
known_hosts file, so any server answering for the source cluster's name would
be trusted.  Loaded in a config, this plugin makes every sftp connection of
that process accept a server only if its key is listed for the name it was
reached by, in ~/.ssh/known_hosts (or the files in ``hostKeyFiles``).  Unlike
paramiko's own check, any of several keys listed for one name is accepted: an
alias such as hpc1any names several nodes, each with its own host key.

usage (copy config)::

    flowcb_prepend hpc_mirror_hostkeys.StrictHostKeys
"""

import logging
import os
import types

import paramiko
from paramiko.hostkeys import HostKeyEntry

try:
    from sarracenia.flowcb import FlowCB
    import sarracenia.transfer.sftp as sftp_transport
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object
    sftp_transport = None

logger = logging.getLogger(__name__)

DEFAULT_FILES = ["~/.ssh/known_hosts"]


def name_matches(pattern, hostname):
    """True if a known_hosts host field (plain or hashed) names hostname."""
    if pattern.startswith("|1|"):
        salt = pattern.split("|")[2]
        return paramiko.HostKeys.hash_host(hostname, salt) == pattern
    return pattern == hostname


def known_keys(files, hostname):
    """Every key listed for hostname in the files, as (type, base64) pairs."""
    keys = set()
    for path in files:
        try:
            with open(os.path.expanduser(path)) as f:
                lines = f.readlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("@"):
                continue
            entry = HostKeyEntry.from_line(line)
            if entry is None or entry.key is None:
                continue
            if any(name_matches(name, hostname) for name in entry.hostnames):
                keys.add((entry.key.get_name(), entry.key.get_base64()))
    return keys


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse a server whose key is not listed for its name."""

    def __init__(self, files):
        self.files = files

    def missing_host_key(self, client, hostname, key):
        if (key.get_name(), key.get_base64()) in known_keys(self.files, hostname):
            return
        raise paramiko.SSHException(
            "host key %s of %s is not listed for it in %s: refusing to connect"
            % (key.get_name(), hostname, ", ".join(self.files)))


def strict_client_class(files):
    class StrictSSHClient(paramiko.SSHClient):
        """An SSHClient whose missing-host-key policy is always the known_hosts check."""

        def set_missing_host_key_policy(self, policy):
            super().set_missing_host_key_policy(KnownHostsPolicy(files))

    return StrictSSHClient


def install(files):
    """Make sr3's sftp transport use the strict client (it calls paramiko.SSHClient())."""
    strict = types.ModuleType("paramiko_strict_host_keys")
    strict.__dict__.update({k: v for k, v in vars(paramiko).items() if not k.startswith("__")})
    strict.SSHClient = strict_client_class(files)
    sftp_transport.paramiko = strict


class StrictHostKeys(FlowCB):
    def __init__(self, options):
        super().__init__(options, logger)
        self.o.add_option("hostKeyFiles", "list", DEFAULT_FILES)
        install(self.o.hostKeyFiles)
        logger.info("sftp host keys are checked against %s", ", ".join(self.o.hostKeyFiles))

# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Two HPC clusters and a broker host on one machine, made of Linux namespaces.

    python3 netns_testbed.py up      create (or complete) the test bed; idempotent
    netns_testbed.py down    remove everything 'up' made, also after a failed run
    netns_testbed.py status  print what exists, as JSON
    netns_testbed.py cut HOST...      an outage: kill the host's processes but sshd, unplug its link
    netns_testbed.py restore HOST...  plug the link back (its processes stay dead, as after a crash)

Each host (hpc1n1, hpc1n2, hpc2n1, hpc2n2, broker) is a network namespace on a
private bridge, with its own hostname (UTS namespace) and a private mount
namespace that only holds its own cluster's tree: hpc1 nodes see /fs/primary,
hpc2 nodes /fs/secondary, so a copy that does not really cross the network
cannot succeed. Nodes of one cluster share /fs and the ops user's home, as on a
real cluster. Every host runs its own sshd (key login only) with its own host
keys; /etc/hosts makes hpc1any and hpc2any name the nodes of each cluster.

Everything lives under the test bed root (default /var/tmp/hpc_mirror_testbed),
except what is recorded in its state.json to be undone by 'down': the ops user
(when it did not exist), and the empty mount points /fs and the user's home.
Needs root, iproute2, util-linux (unshare) and openssh-server.
"""
import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

SUBNET = "10.199.77"
BRIDGE = "hpcmbr0"
CONTROLLER_ADDRESS = SUBNET + ".1"
OPS_USER = "opsM"
# name: (address, cluster or None, tree under /fs)
HOSTS = {
    "broker": (SUBNET + ".10", None, None),
    "hpc1n1": (SUBNET + ".11", "hpc1", "primary"),
    "hpc1n2": (SUBNET + ".12", "hpc1", "primary"),
    "hpc2n1": (SUBNET + ".21", "hpc2", "secondary"),
    "hpc2n2": (SUBNET + ".22", "hpc2", "secondary"),
}
# Directories the broker keeps private, so its RabbitMQ is not the machine's.
BROKER_PRIVATE_DIRS = ["/etc/rabbitmq", "/var/lib/rabbitmq", "/var/log/rabbitmq"]


def run(*cmd, check=True, **kwargs):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kwargs)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Testbed:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.state_file = os.path.join(self.root, "state.json")
        self.changed = False

    # ---- state kept for 'down' -------------------------------------------
    def load_state(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"created_user": False, "created_dirs": []}

    def save_state(self, state):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.state_file)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    # ---- up --------------------------------------------------------------
    def up(self):
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        state = self.load_state()
        self.ensure_user(state)
        self.ensure_mount_point("/fs", 0o755, 0, state)
        user = pwd.getpwnam(OPS_USER)
        self.ensure_mount_point(user.pw_dir, 0o700, user.pw_uid, state)
        self.save_state(state)
        self.ensure_controller_key()
        self.ensure_trees(user)
        self.write_hosts_file()
        self.ensure_bridge()
        for name in HOSTS:
            self.ensure_host_files(name, user)
            self.ensure_netns(name)
            self.ensure_booted(name)
        self.write_controller_known_hosts()
        self.wait_for_sshd()
        return self.status()

    def ensure_user(self, state):
        try:
            pwd.getpwnam(OPS_USER)
        except KeyError:
            home = "/home/" + OPS_USER
            run("useradd", "--badname", "-M", "-d", home, "-s", "/bin/bash", OPS_USER)
            # '*': no password, but not locked, so sshd (without PAM) accepts keys.
            run("usermod", "-p", "*", OPS_USER)
            state["created_user"] = True
            self.changed = True

    def ensure_mount_point(self, path, mode, uid, state):
        if not os.path.isdir(path):
            os.makedirs(path)
            os.chmod(path, mode)
            os.chown(path, uid, -1)
            state["created_dirs"].append(path)
            self.changed = True

    def ensure_controller_key(self):
        key = self.path("controller", "id_ed25519")
        if not os.path.exists(key):
            os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hpc_mirror-testbed-controller", "-f", key)
            self.changed = True

    def ensure_trees(self, user):
        pubkey = open(self.path("controller", "id_ed25519.pub")).read()
        for cluster, tree in (("hpc1", "primary"), ("hpc2", "secondary")):
            fs = self.path(cluster, "fs", tree)
            if not os.path.isdir(fs):
                os.makedirs(fs)
                self.changed = True
            os.chmod(self.path(cluster, "fs"), 0o755)
            os.chown(fs, user.pw_uid, user.pw_gid)
            # The ops user's home, shared by the nodes of one cluster.
            home = self.path(cluster, "home")
            ssh_dir = os.path.join(home, ".ssh")
            if not os.path.isdir(ssh_dir):
                os.makedirs(ssh_dir)
                with open(os.path.join(ssh_dir, "authorized_keys"), "w") as f:
                    f.write(pubkey)
                for p in (home, ssh_dir, os.path.join(ssh_dir, "authorized_keys")):
                    os.chown(p, user.pw_uid, user.pw_gid)
                os.chmod(home, 0o700)
                os.chmod(ssh_dir, 0o700)
                os.chmod(os.path.join(ssh_dir, "authorized_keys"), 0o600)
                self.changed = True

    def write_hosts_file(self):
        lines = ["127.0.0.1 localhost"]
        for name, (address, cluster, _tree) in HOSTS.items():
            lines.append(f"{address} {name}" + (f" {cluster}any" if cluster else ""))
        self.write_if_different(self.path("hosts"), "\n".join(lines) + "\n", 0o644)

    def write_if_different(self, path, text, mode):
        try:
            with open(path) as f:
                if f.read() == text:
                    return
        except FileNotFoundError:
            pass
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        self.changed = True

    def ensure_bridge(self):
        if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            run("ip", "link", "add", BRIDGE, "type", "bridge")
            run("ip", "addr", "add", CONTROLLER_ADDRESS + "/24", "dev", BRIDGE)
            self.changed = True
        run("ip", "link", "set", BRIDGE, "up")

    def ensure_host_files(self, name, user):
        address, cluster, _tree = HOSTS[name]
        etc_ssh = self.path(name, "etc_ssh")
        if not os.path.isdir(etc_ssh):
            # The machine's client settings, but host keys of this host's own.
            shutil.copytree("/etc/ssh", etc_ssh, symlinks=True,
                            ignore=shutil.ignore_patterns("ssh_host_*", "sshd_config*"))
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
                "-f", os.path.join(etc_ssh, "ssh_host_ed25519_key"))
            self.changed = True
        login_user = "root" if cluster is None else OPS_USER
        keys_dir = os.path.join(etc_ssh, "authorized_keys")
        os.makedirs(keys_dir, mode=0o755, exist_ok=True)
        self.write_if_different(os.path.join(keys_dir, login_user),
                                open(self.path("controller", "id_ed25519.pub")).read(), 0o644)
        self.write_if_different(os.path.join(etc_ssh, "sshd_config"), f"""\
# sshd of test host {name}, written by netns_testbed.py
ListenAddress {address}
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin {"prohibit-password" if login_user == "root" else "no"}
AllowUsers {login_user}
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
""", 0o644)
        if cluster is None:
            rabbit = pwd.getpwnam("rabbitmq")
            for d in BROKER_PRIVATE_DIRS:
                private = self.path(name, d.strip("/").replace("/", "_"))
                if not os.path.isdir(private):
                    os.makedirs(private)
                    if d != "/etc/rabbitmq":
                        os.chown(private, rabbit.pw_uid, rabbit.pw_gid)
                    self.changed = True
        self.write_if_different(self.path(name, "boot.sh"), self.boot_script(name, user), 0o755)

    def boot_script(self, name, user):
        _address, cluster, _tree = HOSTS[name]
        mounts = [
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mkdir -p /run/sshd",
            f"mount --bind {self.path(name, 'etc_ssh')} /etc/ssh",
            f"mount --bind {self.path('hosts')} /etc/hosts",
        ]
        if cluster:
            mounts += [f"mount --bind {self.path(cluster, 'fs')} /fs",
                       f"mount --bind {self.path(cluster, 'home')} {user.pw_dir}"]
        else:
            mounts += [f"mount --bind {self.path(name, d.strip('/').replace('/', '_'))} {d}"
                       for d in BROKER_PRIVATE_DIRS]
        return "\n".join([
            "#!/bin/sh",
            f"# First process of test host {name}: hostname, private mounts, then sshd.",
            "set -e",
            f"hostname {name}",
            *mounts,
            "exec /usr/sbin/sshd -D -e",
        ]) + "\n"

    def ensure_netns(self, name):
        address, _cluster, _tree = HOSTS[name]
        veth = "hpcm-" + name
        if name not in self.netns_list():
            run("ip", "netns", "add", name)
            self.changed = True
        if run("ip", "link", "show", veth, check=False).returncode != 0:
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p")
            run("ip", "link", "set", veth + "p", "netns", name)
            run("ip", "-n", name, "link", "set", veth + "p", "name", "eth0")
            run("ip", "-n", name, "addr", "add", address + "/24", "dev", "eth0")
            run("ip", "link", "set", veth, "master", BRIDGE)
            self.changed = True
        run("ip", "link", "set", veth, "up")
        run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", name, "link", "set", "eth0", "up")

    def init_pid(self, name):
        """Pid of the unshare holding the host's namespaces, when its sshd runs, or None."""
        try:
            pid = int(open(self.path(name, "init.pid")).read())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().startswith(b"unshare"):
                    return None
            children = open(f"/proc/{pid}/task/{pid}/children").read().split()
            for child in children:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"sshd" in f.read():
                        return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        return None

    def ensure_booted(self, name):
        if self.init_pid(name):
            return
        with open(self.path(name, "boot.log"), "ab") as out:
            proc = subprocess.Popen(
                # Own pid namespace too: sr3 kills processes of its user that it
                # does not know as "strays", and would see other hosts' otherwise.
                ["ip", "netns", "exec", name, "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
                 "--propagation", "private", self.path(name, "boot.sh")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        # The pid of unshare, which waits for sshd (pid 1 of the host's pid namespace).
        with open(self.path(name, "init.pid"), "w") as f:
            f.write(str(proc.pid))
        self.changed = True

    def host_public_key(self, name):
        return open(self.path(name, "etc_ssh", "ssh_host_ed25519_key.pub")).read().split()[:2]

    def write_controller_known_hosts(self):
        lines = []
        for name, (address, _cluster, _tree) in HOSTS.items():
            keytype, key = self.host_public_key(name)
            lines.append(f"{name},{address} {keytype} {key}")
        self.write_if_different(self.path("controller", "known_hosts"), "\n".join(lines) + "\n", 0o644)

    def wait_for_sshd(self, timeout=20):
        deadline = time.time() + timeout
        for name, (address, _cluster, _tree) in HOSTS.items():
            while True:
                if not self.boot_alive(name):
                    raise SystemExit(f"test host {name}: sshd is not running; see {self.path(name, 'boot.log')}")
                if self.ssh_banner(address):
                    break
                if time.time() > deadline:
                    raise SystemExit(f"test host {name}: sshd does not answer on {address}:22")
                time.sleep(0.2)

    def boot_alive(self, name):
        try:
            return os.path.exists("/proc/%d" % int(open(self.path(name, "init.pid")).read()))
        except (FileNotFoundError, ValueError):
            return False

    @staticmethod
    def ssh_banner(address):
        try:
            with socket.create_connection((address, 22), timeout=1) as conn:
                return conn.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    # ---- down ------------------------------------------------------------
    def down(self):
        state = self.load_state()
        for name in HOSTS:
            if name in self.netns_list():
                self.kill_netns_processes(name)
                run("ip", "netns", "del", name)
                self.changed = True
            # A process that left the network namespace still holds the mounts.
            pid = self.init_pid(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
            if run("ip", "link", "show", "hpcm-" + name, check=False).returncode == 0:
                run("ip", "link", "del", "hpcm-" + name)
        if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            run("ip", "link", "del", BRIDGE)
            self.changed = True
        if state.get("created_user"):
            run("userdel", OPS_USER, check=False)
            self.changed = True
        for path in reversed(state.get("created_dirs", [])):
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        if os.path.isdir(self.root):
            shutil.rmtree(self.root)
            self.changed = True
        return self.status()

    def kill_netns_processes(self, name, timeout=10):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.time() + timeout
            while True:
                pids = [int(p) for p in run("ip", "netns", "pids", name, check=False).stdout.split()]
                if not pids:
                    return
                if time.time() > deadline:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                time.sleep(0.2)
        raise SystemExit(f"test host {name}: processes {pids} do not die")

    # ---- outages ---------------------------------------------------------
    def cut(self, names):
        for name in names:
            self.check_host(name)
            sshd = self.sshd_pid(name)
            for pid in run("ip", "netns", "pids", name).stdout.split():
                if int(pid) not in (sshd, self.init_pid(name)):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            run("ip", "link", "set", "hpcm-" + name, "down")
            self.changed = True
        return self.status()

    def restore(self, names):
        for name in names:
            self.check_host(name)
            run("ip", "link", "set", "hpcm-" + name, "up")
            self.changed = True
        return self.status()

    def check_host(self, name):
        if name not in HOSTS or self.init_pid(name) is None:
            raise SystemExit(f"no running test host {name}")

    def sshd_pid(self, name):
        """Pid (seen from here) of the sshd listening for the host: its pid namespace's first process."""
        init = self.init_pid(name)
        return int(open(f"/proc/{init}/task/{init}/children").read().split()[0])

    # ---- status ----------------------------------------------------------
    @staticmethod
    def netns_list():
        out = run("ip", "netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def status(self):
        namespaces = self.netns_list()
        return {
            "changed": self.changed,
            "root": self.root,
            "controller_address": CONTROLLER_ADDRESS,
            "ops_user": OPS_USER,
            "private_key": self.path("controller", "id_ed25519"),
            "known_hosts": self.path("controller", "known_hosts"),
            "hosts": {
                name: {
                    "address": address,
                    "cluster": cluster,
                    "tree": f"/fs/{tree}" if tree else None,
                    "netns": name in namespaces,
                    "running": self.init_pid(name) is not None,
                    "link_up": "state UP" in run("ip", "link", "show", "hpcm-" + name, check=False).stdout
                    or "LOWER_UP" in run("ip", "link", "show", "hpcm-" + name, check=False).stdout,
                }
                for name, (address, cluster, tree) in HOSTS.items()
            },
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status", "cut", "restore"])
    parser.add_argument("hosts", nargs="*", help="test hosts, for cut and restore")
    parser.add_argument("--root", default=os.environ.get("HPC_MIRROR_TESTBED", "/var/tmp/hpc_mirror_testbed"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("netns_testbed.py needs root (network and mount namespaces, sshd, useradd)")
    testbed = Testbed(args.root)
    if args.action in ("cut", "restore"):
        result = getattr(testbed, args.action)(args.hosts)
    else:
        result = getattr(testbed, args.action)()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

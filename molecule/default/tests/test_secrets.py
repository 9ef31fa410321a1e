"""Secrets on the two-cluster bed (issue 14): no broker password on any process
argument list while the playbooks run; a wrong password in the inventory fails
the deploy before anything changes; rotation is an explicit playbook that keeps
the flow mirroring; the copiers' keys are restricted to sftp (remove.yml takes
exactly their lines away: test_ops_lifecycle_two_clusters.py, which removes the flow).

The test bed's hosts share one pid namespace with the controller, so reading
/proc here sees every process of every host."""

import os
import re
import secrets
import string
import subprocess
import tempfile
import threading
import time

import pytest

from testbed import HOME, KEYS_BEGIN as MARKER, KEYS_END as MARKER_END, ROOT, authorized_lines, copier_keys, \
    group_vars, node, wait_until_equal

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
INVENTORY = os.path.dirname(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent/x"))
VARS = group_vars()
USER = VARS["hpc_mirror_broker_user"]
PASSWORD_FILE = os.path.join(ROOT, "controller", "broker_password")
FLOW = "mirror_primary_to_secondary"
COPY = "sarra/%s_copy" % FLOW
WINNOW = "winnow/%s_00" % FLOW
COPIER_ADDRESSES = ["10.199.77.21", "10.199.77.22"]


def current_password():
    with open(PASSWORD_FILE) as f:
        return f.read().strip()


def new_password():
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _unused in range(24))


class ArgvSampler:
    """Samples every process's argument list (/proc/*/cmdline, and `ps -eo args`
    in turns) until stopped; remembers those holding a secret, and how many
    rabbitmqctl user commands it saw (proof that it looked while they ran)."""

    def __init__(self, *secrets_):
        self.secrets = [s for s in secrets_ if s]
        self.hits, self.rabbitmqctl_user_commands, self.samples = set(), set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _argvs(self, use_ps):
        if use_ps:
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
            return out.splitlines()[1:]
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
        return found

    def _run(self):
        while not self._stop.is_set():
            for argv in self._argvs(use_ps=self.samples % 2 == 1):
                if any(s in argv for s in self.secrets):
                    self.hits.add(argv)
                if "rabbitmqctl" in argv and re.search(r"\b(authenticate_user|add_user|change_password)\b", argv):
                    self.rabbitmqctl_user_commands.add(argv)
            self.samples += 1
            # leave the 2 cores to the deploy; a rabbitmqctl call lives about a second
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def playbook(path, *extra):
    """ansible-playbook <path> on the test bed; (rc, output)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")
    result = subprocess.run(["ansible-playbook", "-i", INVENTORY, os.path.join(PROJECT, path)] + list(extra),
                            cwd=PROJECT, capture_output=True, text=True, check=False, env=env)
    return result.returncode, result.stdout + result.stderr


def vars_file(**values):
    """A mode 0600 vars file for -e @file: passwords never go on a command line."""
    fd, path = tempfile.mkstemp(prefix="hpc_mirror_secrets_", suffix=".yml")
    with os.fdopen(fd, "w") as f:
        for name, value in values.items():
            f.write("%s: '%s'\n" % (name, value))
    return path


def recap(output):
    """{host: changed count} of the PLAY RECAP."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def logs_in(broker, password):
    """rabbitmqctl authenticate_user, the password on stdin."""
    return broker.run("printf '%%s' %s | rabbitmqctl -q authenticate_user %s", password, USER).rc == 0


def pids(host, config):
    component, name = config.split("/")
    out = host.run("cat ~/.cache/sr3/$(hostname)/%s/%s/*.pid 2>/dev/null; true", component, name).stdout
    return sorted(out.split())


@pytest.fixture(scope="module")
def hosts():
    found = {name: node(name) for name in ("hpc1n1", "hpc1n2", "hpc2n1")}
    found["broker"] = node("broker", user="root")
    return found


def test_the_sampler_sees_a_secret_on_a_command_line():
    secret = new_password()
    with ArgvSampler(secret) as sampler:
        subprocess.run(["python3", "-c", "import time; time.sleep(1)", secret], check=True)
    assert sampler.hits and all(secret in argv for argv in sampler.hits)


def test_deploy_puts_no_password_on_any_command_line(hosts):
    password = current_password()
    assert logs_in(hosts["broker"], password)
    with ArgvSampler(password) as sampler:
        rc, output = playbook("deploy.yml")
    assert rc == 0, output[-4000:]
    assert sampler.samples > 50, sampler.samples
    # the sampler did see the commands that used to carry the password
    assert any("authenticate_user" in a for a in sampler.rabbitmqctl_user_commands), sampler.rabbitmqctl_user_commands
    assert not sampler.hits, "password on a command line: %s" % sampler.hits


def test_a_wrong_inventory_password_fails_before_any_change(hosts):
    password = current_password()
    broker, hpc1n1, hpc2n1 = hosts["broker"], hosts["hpc1n1"], hosts["hpc2n1"]
    credentials = {n: hosts[n].file(HOME + "/.config/sr3/credentials.conf").content_string for n in ("hpc1n1", "hpc2n1")}
    before = {c: pids(hpc2n1, c) for c in (COPY, WINNOW)}
    wrong = vars_file(hpc_mirror_broker_password=password + "typo")
    try:
        with ArgvSampler(password, password + "typo") as sampler:
            rc, output = playbook("deploy.yml", "-e", "@" + wrong)
    finally:
        os.unlink(wrong)
    assert rc != 0, output[-4000:]
    folded = " ".join(output.split())
    assert ("The broker password in the inventory (hpc_mirror_broker_password) does not log in as broker user %s"
            % USER) in folded, output[-4000:]
    assert "rotate_broker_password.yml" in folded
    assert set(recap(output).values()) == {0}, recap(output)
    assert not sampler.hits
    # the broker kept the real password, the nodes their credentials, the flow its processes
    assert logs_in(broker, password)
    for n, content in credentials.items():
        assert hosts[n].file(HOME + "/.config/sr3/credentials.conf").content_string == content, n
    assert {c: pids(hpc2n1, c) for c in (COPY, WINNOW)} == before
    assert hpc1n1.run("true").rc == 0


def test_rotation_changes_the_password_everywhere_and_the_flow_goes_on(hosts):
    broker, hpc1n1, hpc2n1 = hosts["broker"], hosts["hpc1n1"], hosts["hpc2n1"]
    old, new = current_password(), new_password()
    before = {c: pids(hpc2n1, c) for c in (COPY, WINNOW)}
    assert all(before.values()), before
    extra = vars_file(hpc_mirror_broker_new_password=new)
    try:
        with ArgvSampler(old, new) as sampler:
            rc, output = playbook("rotate_broker_password.yml", "-e", "@" + extra)
    finally:
        os.unlink(extra)
        # the inventory (the test bed's password file) follows the broker, whatever happened
        for candidate in (new, old):
            if logs_in(broker, candidate):
                with open(PASSWORD_FILE, "w") as f:
                    f.write(candidate + "\n")
                break
    assert rc == 0, output[-4000:]
    assert not sampler.hits, "password on a command line: %s" % sampler.hits
    assert any("change_password" in a for a in sampler.rabbitmqctl_user_commands), sampler.rabbitmqctl_user_commands
    assert logs_in(broker, new) and not logs_in(broker, old)
    for name in ("hpc1n1", "hpc2n1"):
        credentials = hosts[name].file(HOME + "/.config/sr3/credentials.conf")
        assert credentials.mode == 0o600
        assert ":%s@" % new in credentials.content_string and old not in credentials.content_string, name
    # restarted: new instances, none of the old ones
    deadline = time.time() + 60
    while True:
        after = {c: pids(hpc2n1, c) for c in (COPY, WINNOW)}
        if all(after[c] and not set(after[c]) & set(before[c]) for c in before) or time.time() > deadline:
            break
        time.sleep(2)
    for config in before:
        assert after[config] and not set(after[config]) & set(before[config]), (config, before, after)
    # the flow still mirrors, small files and one above the accelerator threshold (scp over sftp)
    run = "rotated-%d" % time.time()
    hpc1n1.check_output("mkdir /fs/primary/%s && echo after-rotation > /fs/primary/%s/small.txt"
                        " && head -c 2000000 /dev/urandom > /fs/primary/%s/large.bin", run, run, run)
    source, destination = wait_until_equal(hpc1n1, "/fs/primary/" + run, hpc2n1, "/fs/secondary/" + run, timeout=120)
    assert sorted(source) == ["large.bin", "small.txt"]
    assert destination == source


def test_rotation_refuses_when_the_inventory_password_is_wrong(hosts):
    password = current_password()
    extra = vars_file(hpc_mirror_broker_password=password + "typo", hpc_mirror_broker_new_password=new_password())
    try:
        rc, output = playbook("rotate_broker_password.yml", "-e", "@" + extra)
    finally:
        os.unlink(extra)
    assert rc != 0
    assert "Neither the current password in the inventory" in " ".join(output.split()), output[-4000:]
    assert set(recap(output).values()) == {0}, recap(output)
    assert logs_in(hosts["broker"], password)


def test_copier_keys_are_restricted_to_sftp_from_the_copiers(hosts):
    lines = authorized_lines(hosts["hpc1n1"])
    assert MARKER in lines and MARKER_END in lines
    block = lines[lines.index(MARKER) + 1:lines.index(MARKER_END)]
    options = 'restrict,command="internal-sftp",from="%s"' % ",".join(COPIER_ADDRESSES)
    assert block and all(line.startswith(options + " ssh-ed25519 ") for line in block), block
    # no line of a copier key anywhere without the restrictions
    for key in copier_keys(hosts["hpc2n1"]):
        with_key = [line for line in lines if key in line]
        assert with_key and all(line.startswith(options) for line in with_key), with_key


def test_the_copier_key_gets_no_shell(hosts):
    hpc2n1 = hosts["hpc2n1"]
    for args in ("hpc1any echo SHELL-$((6*7))", "-tt hpc1any"):
        # '; echo': testinfra takes an exit status of 255 (what ssh returns here) for its own connection failing
        run = hpc2n1.run("echo 'echo SHELL-$((6*7))' | timeout 30 ssh -o BatchMode=yes %s; echo exit $?" % args)
        output = run.stdout + run.stderr
        assert "SHELL-42" not in output, (args, output)
        assert "exit 0" not in run.stdout, (args, output)
        # a command gets internal-sftp's refusal; a terminal is refused (restrict has no-pty)
        assert "This service allows sftp connections only." in output or \
            "PTY allocation request failed" in output, (args, output)


PARAMIKO = r'''
import os, paramiko
c = paramiko.SSHClient()
c.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
# hpc1n1: one of the nodes hpc1any names (known_hosts has "hpc1any,hpc1n1 <key>")
c.connect("hpc1n1", username="opsM", key_filename=os.path.expanduser("~/.ssh/id_hpc_mirror"),
          allow_agent=False, look_for_keys=False, timeout=20)
print("listed", sorted(c.open_sftp().listdir("/fs")))
_, out, err = c.exec_command("echo SHELL-$((6*7))", timeout=20)
print("exec", out.read().decode().strip(), err.read().decode().strip())
'''


def test_sftp_with_the_copier_key_works(hosts):
    hpc2n1 = hosts["hpc2n1"]
    run = hpc2n1.run("echo 'ls /fs' | timeout 30 sftp -b - hpc1any")
    assert run.rc == 0 and "primary" in run.stdout, (run.stdout, run.stderr)
    # paramiko, as sr3's sftp transport uses it
    run = hpc2n1.run("timeout 60 ~/.local/share/hpc_mirror/venv/bin/python -c %s", PARAMIKO)
    assert run.rc == 0, run.stderr
    assert "listed [" in run.stdout and "'primary'" in run.stdout, run.stdout
    assert "SHELL-42" not in run.stdout, run.stdout


def test_the_copier_key_is_refused_from_another_address(hosts):
    # hpc1n2 is no copier host: the same key (copied there for the test) is refused by from=.
    key = hosts["hpc2n1"].file(HOME + "/.ssh/id_hpc_mirror").content_string
    hpc1n2 = hosts["hpc1n2"]
    path = "/tmp/hpc_mirror_foreign_key"
    hpc1n2.check_output("umask 077 && printf '%%s' %s > %s", key, path)
    try:
        run = hpc1n2.run("echo 'ls /fs' | timeout 30 sftp -b - -i %s -o IdentitiesOnly=yes "
                         "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null opsM@hpc1any; echo exit $?", path)
        assert "exit 0" not in run.stdout and "Permission denied" in run.stderr, (run.stdout, run.stderr)
    finally:
        hpc1n2.run("rm -f %s", path)

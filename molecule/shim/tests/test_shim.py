"""Verify the shim mirror for real: sr3c built from SR3C_SOURCE in the ops user's
home, and files written by ordinary commands run under the shim wrapper reach
the secondary tree through RabbitMQ and the sr3 processes."""

import json
import os
import re
import subprocess
import time

import pytest

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["broker-local"]

USER = "opsmshim"
HOME = "/home/" + USER
PRIMARY = "/var/tmp/hpc_mirror_molecule_shim/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule_shim/secondary"
FLOW = "mirror_primary_to_secondary"
PREFIX = HOME + "/.local/share/hpc_mirror/sr3c"
WRAPPER = HOME + "/.local/bin/hpc_mirror_shim"
ENV_SCRIPT = HOME + "/.local/share/hpc_mirror/shim.sh"
CURRENT = HOME + "/.config/hpc_mirror/current_post_config"


def as_user(host, script):
    return host.run("runuser -u %s -- bash -c %s", USER, "cd && " + script)


def tree_state(host, root):
    """Relative path -> (type, content or link target) for every entry."""
    script = r'''
import os, sys, json, hashlib
root = sys.argv[1]
out = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n); r = os.path.relpath(p, root)
        if os.path.islink(p): out[r] = ["link", os.readlink(p)]
        elif os.path.isdir(p): out[r] = ["dir", ""]
        else: out[r] = ["file", hashlib.sha256(open(p, "rb").read()).hexdigest()]
print(json.dumps(out))
'''
    result = host.run("python3 -c %s %s", script, root)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def wait_until_mirrored(host, timeout=90, tolerated=(), settle=10):
    """Poll both trees until they are equal, or until every difference is a tolerated path and the
    differences stayed the same for `settle` s (a known bug: waiting the whole timeout changes nothing)."""
    deadline = time.time() + timeout
    same_since, last = None, None
    while True:
        source, destination = tree_state(host, PRIMARY), tree_state(host, SECONDARY)
        if source == destination or time.time() > deadline:
            return source, destination
        diff = differences(source, destination)
        if tolerated and set(diff) <= set(tolerated):
            if diff != last:
                same_since, last = time.time(), diff
            elif time.time() - same_since >= settle:
                return source, destination
        else:
            same_since, last = None, None
        time.sleep(1)


def differences(source, destination):
    return {path: (source.get(path), destination.get(path))
            for path in set(source) | set(destination) if source.get(path) != destination.get(path)}


def test_sr3c_built_in_the_ops_users_home(host):
    stamp = host.file(PREFIX + "/.hpc_mirror_sr3c_stamp")
    assert stamp.exists and stamp.user == USER
    version = dict(line.split("=", 1) for line in stamp.content_string.splitlines())["version"]
    library = host.file("%s/lib/libsr3shim.so.%s" % (PREFIX, version))
    assert library.is_file and library.user == USER
    cpost = host.file(PREFIX + "/bin/sr3_cpost")
    assert cpost.is_file and cpost.mode & 0o111
    # libsr3c is found through the library's RUNPATH, without LD_LIBRARY_PATH.
    ldd = host.check_output("ldd %s", library.path)
    assert "libsr3c.so.3 => %s/lib/" % PREFIX in ldd, ldd
    assert "not found" not in ldd


def test_activation_files(host):
    assert host.file(CURRENT).content_string == FLOW + "\n"
    env_script = host.file(ENV_SCRIPT).content_string
    assert "hpc_mirror_shim_lib='%s/lib/libsr3shim.so." % PREFIX in env_script
    assert host.file(WRAPPER).mode == 0o755
    bashrc = host.file(HOME + "/.bashrc").content_string
    assert bashrc.startswith("# BEGIN sr3.hpc_mirror sr3c shim"), bashrc[:200]


def test_env_script_sets_the_shim(host):
    out = as_user(host, ". %s && echo \"$LD_PRELOAD|$SR_POST_CONFIG|$LC_SRSHIM|${SR_SHIMDEBUG-unset}\"" % ENV_SCRIPT)
    assert out.rc == 0, out.stderr
    preload, config, marker, debug = out.stdout.strip().split("|")
    assert preload.startswith(PREFIX + "/lib/libsr3shim.so.")
    assert config == FLOW and marker == FLOW and debug == "unset"


def test_bashrc_hook_covers_non_login_shells(host):
    # What sshd runs for "ssh host cmd" with LC_SRSHIM passed: bash -c, non-login, non-interactive.
    out = host.run("runuser -u %s -- env -i HOME=%s LC_SRSHIM=%s bash -c %s",
                   USER, HOME, FLOW, "source ~/.bashrc; echo $LD_PRELOAD")
    assert out.stdout.strip().startswith(PREFIX + "/lib/libsr3shim.so."), out.stdout + out.stderr


def test_wrapper_needs_a_command(host):
    out = as_user(host, WRAPPER)
    assert out.rc == 2 and "usage:" in out.stderr


def test_canary_sees_the_shim_post(host):
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.shim_canary"],
        capture_output=True, text=True, check=False, env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "the shim posted" in result.stdout
    print([line for line in result.stdout.splitlines() if "the shim posted" in line])


def test_canary_reports_a_misconfigured_shim(host):
    """A posting config the shim cannot use: the job still runs, nothing is posted."""
    as_user(host, "echo no_such_config > %s" % CURRENT)
    try:
        out = as_user(host, "%s touch %s/failed_open && rm %s/failed_open && echo ran" % (WRAPPER, PRIMARY, PRIMARY))
        assert out.rc == 0 and "ran" in out.stdout, out.stderr
        result = subprocess.run(
            ["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.shim_canary", "-e", "canary_timeout=5"],
            capture_output=True, text=True, check=False, env=dict(os.environ))
        assert result.returncode != 0
        assert "nothing was posted" in result.stdout + result.stderr
        assert "The write ran (rc 0)" in result.stdout + result.stderr
    finally:
        as_user(host, "echo %s > %s" % (FLOW, CURRENT))


# Redirections of programs (/bin/echo, not the shell's builtin echo): the program
# closes the file under the shim. What a shell builtin writes through a
# redirection is not posted by sr3c 3.24.10 (docs/sr3c-shim-findings.md).
OPERATIONS = [
    # (operation, command run under the wrapper)
    ("mkdir", "mkdir -p {p}/jobs/run1/out"),
    ("create", "bash -c '/bin/echo first > {p}/jobs/run1/new.txt'"),
    ("create for overwrite", "bash -c '/bin/echo short > {p}/jobs/run1/over.txt'"),
    ("create for append", "bash -c '/bin/echo line1 > {p}/jobs/run1/log.txt'"),
    ("create for mv", "bash -c '/bin/echo moving > {p}/jobs/run1/before.txt'"),
    ("create in dir for mv", "bash -c '/bin/echo inside > {p}/jobs/run1/out/f.txt'"),
    ("create for rm", "bash -c '/bin/echo doomed > {p}/jobs/run1/doomed.txt'"),
    ("create for ln", "bash -c '/bin/echo linked > {p}/jobs/run1/target.txt'"),
    ("dd", "dd if=/dev/urandom of={p}/jobs/run1/data.bin bs=64k count=16 status=none"),
    ("cp", "cp {p}/jobs/run1/new.txt {p}/jobs/run1/copy.txt"),
    ("mkdir for rmdir", "mkdir {p}/jobs/run1/empty"),
]
SECOND_WAVE = [
    ("overwrite (>)", "bash -c '/bin/echo overwritten, longer than before > {p}/jobs/run1/over.txt'"),
    ("append (>>)", "bash -c '/bin/echo line2 >> {p}/jobs/run1/log.txt'"),
    ("mv file", "mv {p}/jobs/run1/before.txt {p}/jobs/run1/after.txt"),
    ("mv dir", "mv {p}/jobs/run1/out {p}/jobs/run1/results"),
    ("ln -s", "ln -s new.txt {p}/jobs/run1/link"),
    ("ln", "ln {p}/jobs/run1/target.txt {p}/jobs/run1/hard.txt"),
    ("rm", "rm {p}/jobs/run1/doomed.txt"),
    ("rmdir", "rmdir {p}/jobs/run1/empty"),
    ("truncate", "truncate -s 1000 {p}/jobs/run1/data.bin"),
]


def run_wave(host, wave):
    """Each operation as its own job step under the wrapper; the job must run (rc 0)."""
    codes = {}
    for name, command in wave:
        out = as_user(host, "timeout 60 %s %s" % (WRAPPER, command.format(p=PRIMARY)))
        codes[name] = (out.rc, out.stderr.strip()[-300:])
    return codes


# Measured with sr3c 3.24.10 (only testable with the floor lowered): cp crashes at
# exit (SIGSEGV) after it posted, and a hard link is posted as a rename, so the
# copy of the link's source is removed. Tolerated, and reported, below 3.24.12 only.
KNOWN_BELOW_FLOOR = {"exit": {"cp"}, "differences": {"jobs/run1/target.txt"}}


def sr3c_version(host):
    stamp = host.file(PREFIX + "/.hpc_mirror_sr3c_stamp").content_string
    version = dict(line.split("=", 1) for line in stamp.splitlines())["version"]
    return version, tuple(int(n) for n in re.findall(r"\d+", version)[:3])


def test_operations_under_the_wrapper_are_mirrored(host):
    # Below the floor the known differences never go away: stop waiting once only they are
    # left, and stayed so for 10 s, instead of the whole 90 s (the assertions below are the same).
    tolerated = KNOWN_BELOW_FLOOR["differences"] if sr3c_version(host)[1] < (3, 24, 12) else ()
    first = run_wave(host, OPERATIONS)
    wait_until_mirrored(host, tolerated=tolerated)
    second = run_wave(host, SECOND_WAVE)
    source, destination = wait_until_mirrored(host, tolerated=tolerated)
    failed = {name: code for name, code in dict(first, **second).items() if code[0] != 0}
    diff = differences(source, destination)
    print("exit codes not 0:", failed)
    print("differences:", json.dumps(diff, indent=1))
    assert destination["jobs/run1/link"] == ["link", "new.txt"]
    assert "jobs/run1/doomed.txt" not in destination
    assert "jobs/run1/before.txt" not in destination
    assert "jobs/run1/empty" not in destination
    assert "jobs/run1/results/f.txt" in destination and "jobs/run1/out" not in destination
    assert destination["jobs/run1/over.txt"] == source["jobs/run1/over.txt"]
    assert destination["jobs/run1/log.txt"] == source["jobs/run1/log.txt"]
    version, numbers = sr3c_version(host)
    if (diff or failed) and numbers < (3, 24, 12) and set(failed) <= KNOWN_BELOW_FLOOR["exit"] \
            and set(diff) <= KNOWN_BELOW_FLOOR["differences"]:
        pytest.xfail("sr3c %s: only its known bugs: exit codes %s, not mirrored %s"
                     % (version, {k: v[0] for k, v in failed.items()}, sorted(diff)))
    assert not diff, "not mirrored: %s" % sorted(diff)
    assert not failed, failed


def test_audit_playbook_passes(host):
    # Below 3.24.12 a hard link removes the copy of its source (see above): the
    # audit repairs it (re-posts what is missing), as it would in production.
    # Re-audits every 3 s instead of 10 (as many rounds: 180 s in all, ample for a hold of 3 s).
    repair = ["-e", "audit_repair=true", "-e", "audit_repair_interval=3", "-e", "audit_repair_timeout=180"] \
        if sr3c_version(host)[1] < (3, 24, 12) else []
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.audit"] + repair,
        capture_output=True, text=True, check=False, env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "The mirror matches: 0 differences" in result.stdout

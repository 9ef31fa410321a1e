"""The sr3c role for real, run by ansible-playbook on this machine.

Bad input needs no sarrac source: a tree whose debian/changelog names an old
version, tarballs with a wrong checksum, an unreachable URL, a missing compiler
or development files, a wrapper whose library is gone. Each must fail naming
the cause.

The build tests need the real sarrac source: set SR3C_SOURCE to a release
tarball or source tree (SR3C_SOURCE_CHECKSUM, "sha256:<hex>", is computed when
not given). SR3C_MINIMUM_VERSION lowers the version floor, only to try a build
older than 3.24.12. scripts/test.sh (so CI) sets all three for the sarrac
3.24.10 tarball it finds beside the checkout (../shared/vendor), once its
sha256 matches that directory's SHA256SUMS.
"""
import hashlib
import http.server
import os
import shutil
import subprocess
import tarfile
import threading

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SR3C_SOURCE = os.environ.get("SR3C_SOURCE", "")
MINIMUM = os.environ.get("SR3C_MINIMUM_VERSION") or "3.24.12"
needs_source = pytest.mark.skipif(not SR3C_SOURCE, reason="SR3C_SOURCE (sarrac release tarball or source tree) is not set")


def run_role(tmp_path, role_vars, tasks_from=None, extra_tasks=()):
    """Run the sr3c role on localhost as the current user, everything under tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    include = {"name": "sr3.hpc_mirror.sr3c"}
    if tasks_from:
        include["tasks_from"] = tasks_from
    play = [{
        "name": "sr3c",
        "hosts": "localhost",
        "gather_facts": True,
        "gather_subset": ["min"],
        "vars": dict({"sr3c_home": str(home)}, **role_vars),
        "tasks": [{"name": "Run the role", "ansible.builtin.include_role": include}] + list(extra_tasks),
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
         "ansible_python_interpreter={{ ansible_playbook_python }}", str(playbook)],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
    return result.returncode, result.stdout + result.stderr, home


def fake_source(root, version):
    """A tree shaped like sarrac's, with only what the role reads before building."""
    (root / "debian").mkdir(parents=True)
    (root / "debian" / "changelog").write_text("metpx-sr3c (%s) unstable; urgency=medium\n" % version)
    (root / "Makefile").write_text("all:\n\tfalse\n")
    (root / "libsr3shim.c").write_text("int x;\n")
    return root


def tarball_of(tree, path):
    with tarfile.open(str(path), "w:gz") as tar:
        tar.add(str(tree), arcname="sarrac-x")
    return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_source_below_the_floor_is_refused(tmp_path):
    tree = fake_source(tmp_path / "sarrac", "3.24.10")
    rc, out, home = run_role(tmp_path, {"sr3c_source": str(tree)})
    assert rc != 0
    assert "sr3c 3.24.10 (%s) is older than the minimum version 3.24.12" % tree in out, out[-3000:]
    assert not (home / ".local/share/hpc_mirror/sr3c").exists()


def test_release_candidate_below_the_floor_is_refused(tmp_path):
    tarball, checksum = tarball_of(fake_source(tmp_path / "sarrac", "3.24.12rc1"), tmp_path / "sarrac.tar.gz")
    rc, out, dummy = run_role(tmp_path, {"sr3c_source": str(tarball), "sr3c_source_checksum": checksum})
    assert rc != 0
    assert "sr3c 3.24.12rc1" in out and "older than the minimum version 3.24.12" in out, out[-3000:]


def test_tarball_checksum_mismatch(tmp_path):
    tarball, checksum = tarball_of(fake_source(tmp_path / "sarrac", "3.24.12"), tmp_path / "sarrac.tar.gz")
    wrong = "sha256:" + "0" * 64
    rc, out, home = run_role(tmp_path, {"sr3c_source": str(tarball), "sr3c_source_checksum": wrong})
    assert rc != 0
    assert "checksum mismatch" in out and checksum.split(":")[1] in out, out[-3000:]
    assert not list((home / ".cache/hpc_mirror/sr3c/src").iterdir())


def test_tarball_without_checksum(tmp_path):
    tarball, dummy = tarball_of(fake_source(tmp_path / "sarrac", "3.24.12"), tmp_path / "sarrac.tar.gz")
    rc, out, dummy = run_role(tmp_path, {"sr3c_source": str(tarball)})
    assert rc != 0
    assert "sr3c_source_checksum must be <algorithm>:<hex digest>" in out, out[-3000:]


def test_missing_source(tmp_path):
    rc, out, dummy = run_role(tmp_path, {"sr3c_source": str(tmp_path / "nowhere.tar.gz")})
    assert rc != 0
    assert "sr3c_source %s does not exist" % (tmp_path / "nowhere.tar.gz") in out, out[-3000:]


def test_unreachable_url(tmp_path):
    url = "http://127.0.0.1:9/sarrac-3.24.12.tar.gz"   # discard port: nothing listens
    rc, out, dummy = run_role(tmp_path, {"sr3c_source": url, "sr3c_source_checksum": "sha256:" + "0" * 64})
    assert rc != 0
    assert "sr3c_source %s cannot be used" % url in out and "unreachable or not found" in out, out[-3000:]


def test_corrupt_download(tmp_path):
    """A served tarball whose bytes are not the ones the checksum names."""
    tarball, checksum = tarball_of(fake_source(tmp_path / "sarrac", "3.24.12"), tmp_path / "sarrac.tar.gz")
    tarball.write_bytes(tarball.read_bytes()[:-10] + b"corrupted!")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/sarrac.tar.gz" % server.server_address[1]
        rc, out, dummy = run_role(tmp_path, {"sr3c_source": url, "sr3c_source_checksum": checksum})
    finally:
        server.shutdown()
    assert rc != 0
    assert "sr3c_source %s cannot be used" % url in out and "did not match" in out, out[-3000:]


def test_missing_compiler_without_become(tmp_path):
    tree = fake_source(tmp_path / "sarrac", "3.24.12")
    rc, out, dummy = run_role(tmp_path, {"sr3c_source": str(tree), "sr3c_cc": "no-such-cc"})
    assert rc != 0
    assert "Cannot build sr3c on localhost: missing gcc (packages gcc)" in out, out[-3000:]
    assert "sr3c_install_build_deps: true" in out


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="hiding headers needs root and unshare")
@pytest.mark.skipif(not os.path.isdir("/usr/include/json-c"), reason="json-c development files are not installed")
def test_missing_development_files_without_become(tmp_path):
    """json-c's headers hidden (a private mount namespace): the check names json-c and its package."""
    tree = fake_source(tmp_path / "sarrac", "3.24.12")
    home = tmp_path / "home"
    home.mkdir()
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": True, "gather_subset": ["min"],
        "vars": {"sr3c_home": str(home), "sr3c_source": str(tree)},
        "tasks": [{"ansible.builtin.include_role": {"name": "sr3.hpc_mirror.sr3c"}}]}]))
    command = ("mount -t tmpfs none /usr/include/json-c && exec ansible-playbook -i localhost, -c local "
               "-e 'ansible_python_interpreter={{ ansible_playbook_python }}' %s" % play)
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
                            cwd=ROOT, capture_output=True, text=True, check=False,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "missing json-c (packages libjson-c-dev)" in out, out[-3000:]


def test_wrapper_fails_when_the_library_is_missing(tmp_path):
    library = tmp_path / "gone" / "libsr3shim.so.3.24.12"
    rc, out, home = run_role(tmp_path, {"sr3c_library_path": str(library), "sr3c_post_config": "mirror_x"},
                             tasks_from="activate")
    assert rc == 0, out[-3000:]
    wrapper = home / ".local/bin/hpc_mirror_shim"
    result = subprocess.run([str(wrapper), "touch", str(tmp_path / "written")], capture_output=True, text=True,
                            check=False, env={"PATH": os.environ["PATH"], "HOME": str(home)})
    assert result.returncode == 126
    assert "the sr3c library %s is missing" % library in result.stderr
    assert "not running touch" in result.stderr
    assert not (tmp_path / "written").exists()
    # The env script says the same and leaves the calling shell alive, without the shim.
    result = subprocess.run(["bash", "-c", ". %s; echo \"rc=$? preload=${LD_PRELOAD:-}\"" %
                             (home / ".local/share/hpc_mirror/shim.sh")],
                            capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"]})
    assert result.stdout.strip() == "rc=1 preload="
    assert "is missing" in result.stderr


def test_wrapper_fails_when_no_posting_config_is_named(tmp_path):
    library = tmp_path / "libsr3shim.so.3.24.12"
    library.write_bytes(b"")
    rc, out, home = run_role(tmp_path, {"sr3c_library_path": str(library)}, tasks_from="activate")
    assert rc == 0, out[-3000:]
    result = subprocess.run([str(home / ".local/bin/hpc_mirror_shim"), "true"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 126
    assert "names no posting config" in result.stderr


# --------------------------------------------------------------------------
# the real sarrac, from SR3C_SOURCE
# --------------------------------------------------------------------------

def source_vars():
    role_vars = {"sr3c_source": SR3C_SOURCE, "sr3c_minimum_version": MINIMUM, "sr3c_post_config": "no_such_config"}
    if os.path.isfile(SR3C_SOURCE):
        with open(SR3C_SOURCE, "rb") as handle:
            role_vars["sr3c_source_checksum"] = os.environ.get("SR3C_SOURCE_CHECKSUM") or (
                "sha256:" + hashlib.sha256(handle.read()).hexdigest())
    return role_vars


SHOW_FACTS = [{"name": "Show the facts", "ansible.builtin.debug": {
    "msg": "FACTS {{ sr3c_library_path }} {{ sr3c_cpost_path }} {{ sr3c_version }}"}}]


@needs_source
def test_build_from_source_is_user_space_and_idempotent(tmp_path):
    rc, out, home = run_role(tmp_path, source_vars(), extra_tasks=SHOW_FACTS)
    assert rc == 0, out[-4000:]
    prefix = home / ".local/share/hpc_mirror/sr3c"
    facts = out.split("FACTS ", 1)[1].split()[:3]
    library, cpost, version = facts[0], facts[1], facts[2].strip('"')
    assert library == "%s/lib/libsr3shim.so.%s" % (prefix, version)
    assert cpost == "%s/bin/sr3_cpost" % prefix
    assert os.path.isfile(library)
    # libsr3c is found through RUNPATH $ORIGIN/../lib.
    ldd = subprocess.run(["ldd", library], capture_output=True, text=True, check=True).stdout
    assert "libsr3c.so.3 => %s/lib/" % prefix in ldd and "not found" not in ldd, ldd
    usage = subprocess.run([cpost, "-h"], capture_output=True, text=True, check=False)
    assert version in usage.stdout + usage.stderr
    stamp = (prefix / ".hpc_mirror_sr3c_stamp").read_text()
    assert "version=%s\n" % version in stamp

    # Second run: nothing rebuilt, nothing changed.
    rc, out, dummy = run_role(tmp_path, source_vars())
    assert rc == 0, out[-4000:]
    assert "changed=0" in out, out[-2000:]
    assert (prefix / ".hpc_mirror_sr3c_stamp").read_text() == stamp

    # A job under a shim whose posting config does not exist still runs (the shim fails open).
    target = tmp_path / "written"
    result = subprocess.run([str(home / ".local/bin/hpc_mirror_shim"), "cp", "/etc/hostname", str(target)],
                            capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"], "HOME": str(home)})
    assert target.read_text() == open("/etc/hostname").read()
    assert "warning: no cpost config no_such_config" in result.stderr


@needs_source
def test_changed_source_rebuilds(tmp_path):
    tree = tmp_path / "tree"
    if os.path.isdir(SR3C_SOURCE):
        shutil.copytree(SR3C_SOURCE, str(tree), symlinks=True)
    else:
        tree.mkdir()
        subprocess.run(["tar", "-xf", SR3C_SOURCE, "-C", str(tree), "--strip-components=1"], check=True)
    role_vars = dict(source_vars(), sr3c_source=str(tree))
    role_vars.pop("sr3c_source_checksum", None)
    rc, out, home = run_role(tmp_path, role_vars)
    assert rc == 0, out[-4000:]
    library = sorted((home / ".local/share/hpc_mirror/sr3c/lib").glob("libsr3shim.so.*"))[0]
    built = library.stat().st_mtime_ns
    with open(str(tree / "sr_util.c"), "a") as handle:
        handle.write("\n/* changed */\n")
    rc, out, dummy = run_role(tmp_path, role_vars)
    assert rc == 0, out[-4000:]
    assert "TASK [sr3.hpc_mirror.sr3c : Build sr3c]" in out
    assert library.stat().st_mtime_ns != built


@pytest.mark.skipif(not shutil.which("apt-cache"), reason="needs apt")
def test_no_repository_offers_the_package(tmp_path):
    rc, out, dummy = run_role(tmp_path, {"sr3c_install_method": "package", "sr3c_package_names": ["metpx-sr3c-none"]})
    assert rc != 0
    assert "No configured package repository offers metpx-sr3c-none" in out, out[-3000:]


# Local packages built from the sarrac source (dpkg-buildpackage -b), for example
# SR3C_PACKAGE_FILES="/tmp/metpx-libsr3c_3.24.12_amd64.deb /tmp/metpx-sr3c_3.24.12_amd64.deb"
PACKAGE_FILES = os.environ.get("SR3C_PACKAGE_FILES", "").split()


@pytest.mark.skipif(not PACKAGE_FILES, reason="SR3C_PACKAGE_FILES (local metpx-sr3c packages) is not set")
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dpkg"), reason="installing packages needs root and dpkg")
def test_install_from_local_package_files(tmp_path):
    installed_before = subprocess.run(["dpkg-query", "-W", "metpx-sr3c"], capture_output=True, check=False).returncode == 0
    role_vars = {"sr3c_install_method": "package", "sr3c_package_files": PACKAGE_FILES,
                 "sr3c_minimum_version": MINIMUM}
    try:
        rc, out, dummy = run_role(tmp_path, role_vars, extra_tasks=SHOW_FACTS)
        assert rc == 0, out[-4000:]
        library, cpost, version = out.split("FACTS ", 1)[1].split()[:3]
        version = version.strip('"')
        assert library == "/usr/lib/libsr3shim.so.%s" % version
        assert cpost == "/usr/bin/sr3_cpost"
        rc, out, dummy = run_role(tmp_path, role_vars)
        assert rc == 0 and "changed=0" in out, out[-3000:]
    finally:
        if not installed_before:
            subprocess.run(["apt-get", "remove", "-y", "-q", "metpx-sr3c", "metpx-libsr3c"],
                           capture_output=True, check=False)

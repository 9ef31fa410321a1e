"""scripts/test.sh picks the vendored sarrac tarball beside the checkout only after checking its sha256.

Each test lays out <tmp>/main/scripts/test.sh and <tmp>/shared/vendor/ as CI has
them and runs the script with a stage name it does not know, so it stops right
after choosing the sr3c source (exit 2) or refuses the tarball (exit 1).
"""
import hashlib
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TARBALL = "sarrac-3.24.10.tar.gz"


@pytest.fixture
def layout(tmp_path):
    (tmp_path / "main" / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "test.sh"), str(tmp_path / "main" / "scripts" / "test.sh"))
    vendor = tmp_path / "shared" / "vendor"
    vendor.mkdir(parents=True)
    (vendor / TARBALL).write_bytes(b"stands in for the sarrac release\n")
    return tmp_path


def run(layout, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SR3C_")}
    environment.update(env)
    environment["PATH"] = "/usr/bin:/bin"
    return subprocess.run(["bash", str(layout / "main" / "scripts" / "test.sh"), "no_such_stage"],
                          capture_output=True, text=True, check=False, env=environment)


def sums(layout, digest):
    (layout / "shared" / "vendor" / "SHA256SUMS").write_text("%s  %s\n" % (digest, TARBALL))


def test_verified_tarball_becomes_the_default_source(layout):
    digest = hashlib.sha256((layout / "shared" / "vendor" / TARBALL).read_bytes()).hexdigest()
    sums(layout, digest)
    result = run(layout)
    assert result.returncode == 2, result.stderr  # the unknown stage, after the check
    tarball = layout / "shared" / "vendor" / TARBALL
    assert "sr3c: %s (sha256 verified), version floor 3.24.10 for the tests" % tarball in result.stdout


def test_checksum_mismatch_stops_everything(layout):
    sums(layout, "0" * 64)
    result = run(layout)
    assert result.returncode == 1
    assert "ERROR: checksum mismatch for %s" % (layout / "shared" / "vendor" / TARBALL) in result.stderr
    assert "SHA256SUMS says %s" % ("0" * 64) in result.stderr
    assert "=== no_such_stage" not in result.stdout


def test_tarball_without_a_checksum_line_is_refused(layout):
    (layout / "shared" / "vendor" / "SHA256SUMS").write_text("%s  other.tar.gz\n" % ("1" * 64))
    result = run(layout)
    assert result.returncode == 1
    assert "has no line for %s: refusing to build an unverified sr3c" % TARBALL in result.stderr


def test_an_explicit_source_is_left_alone(layout):
    sums(layout, "0" * 64)  # would fail if it were checked
    result = run(layout, SR3C_SOURCE="/elsewhere/sarrac")
    assert result.returncode == 2
    assert "sr3c:" not in result.stdout

"""The audit line of `make demo`'s summary, against real audits.

audit.yml runs for real (ansible-playbook, local connection, no broker needed
for an audit without repair) on two small trees, the way scripts/demo.sh runs
it; then scripts/demo_summary.py, the demo's summary step, reads what it left.
The demo once printed "audit ? entries in the primary, ? differences" after
audit.yml's display text changed; these tests fail on any such drift.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPTS = os.path.join(ROOT, "scripts")
sys.path.insert(0, SCRIPTS)
import demo_summary  # noqa: E402  pylint: disable=wrong-import-position

FLOW = "mirror_primary_to_secondary"


def tool(name):
    """The venv's tool next to this Python when there is one, else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else name


def write_tree(root):
    """A small tree like the demo's sample: a non-ASCII name, a space, a large file, a symlink."""
    (root / "results" / "run1").mkdir(parents=True)
    for i in range(1, 6):
        (root / "results" / "run1" / ("out_%d.txt" % i)).write_text("result %d\n" % i)
    (root / "results" / "run1" / "big file.bin").write_bytes(os.urandom(1100000))
    (root / "results" / "café.txt").write_text("bonjour\n")
    (root / "src").mkdir()
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    os.symlink("results/run1", str(root / "latest"))


def count_entries(root):
    return sum(len(dirs) + len(files) for dummy, dirs, files in os.walk(str(root)))


class Bed:
    """Two trees, an inventory naming them, and the audit and summary steps of the demo."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.primary, self.secondary = tmp_path / "primary", tmp_path / "secondary"
        self.report_dir = tmp_path / "audit"
        self.inventory = tmp_path / "inventory.yml"
        local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        self.inventory.write_text(json.dumps({"all": {
            "children": {"mirror_broker": {"hosts": {"broker-local": None}},
                         "mirror_primary": {"hosts": {"hpc-local": None}},
                         "mirror_secondary": {"hosts": {"hpc-local": None}}},
            "hosts": {"broker-local": local, "hpc-local": local},
            "vars": {"hpc_mirror_broker_host": "localhost", "hpc_mirror_broker_user": "demo",
                     "hpc_mirror_broker_password": "unused-by-an-audit",
                     "hpc_mirror_primary_dir": str(self.primary), "hpc_mirror_secondary_dir": str(self.secondary),
                     "hpc_mirror_direction_file": str(tmp_path / "direction.json")}}}))

    def audit(self):
        """audit.yml as scripts/demo.sh runs it: its own report directory, emptied first."""
        shutil.rmtree(str(self.report_dir), ignore_errors=True)
        started = time.time()
        result = subprocess.run(
            [tool("ansible-playbook"), "-i", str(self.inventory), "audit.yml",
             "-e", "audit_report_dir=%s" % self.report_dir, "-e", "audit_remote_dir=%s" % (self.tmp / "remote")],
            cwd=ROOT, capture_output=True, text=True, check=False,
            env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
        return started, result

    def summary(self, audit_started, audit_rc):
        """scripts/demo_summary.py with what scripts/demo.sh gives it (a real wait_mirrored.py result)."""
        wait = subprocess.run([sys.executable, os.path.join(SCRIPTS, "wait_mirrored.py"),
                               str(self.primary), str(self.secondary), "0"],
                              capture_output=True, text=True, check=False).stdout
        tally = self.tmp / "tally.json"
        sample = json.loads(wait)
        tally.write_text(json.dumps({"hpc_mirror_tally": {
            "totals": {"files": 100 + sample["files"], "bytes": 5000 + sample["bytes"]},
            "age_mean": 31.5, "age_max": 33.0}}))
        result = subprocess.run(
            [sys.executable, os.path.join(SCRIPTS, "demo_summary.py"), "--wait", wait, "--hold", "30",
             "--started", str(time.time() - 60), "--audit-rc", str(audit_rc), "--audit-dir", str(self.report_dir),
             "--audit-started", str(audit_started), "--flow", FLOW, "--tally", str(tally),
             "--tally-before", json.dumps({"files": 100, "bytes": 5000}), "--tally-timeout", "0",
             "--primary", str(self.primary), "--secondary", str(self.secondary)],
            capture_output=True, text=True, check=False)
        return result


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    return Bed(tmp_path_factory.mktemp("demo_summary"))


def audit_lines(output):
    return [line for line in output.splitlines() if line.startswith("audit ")]


def test_summary_of_an_audit_with_differences(bed):
    write_tree(bed.primary)
    shutil.copytree(str(bed.primary), str(bed.secondary), symlinks=True)
    os.remove(str(bed.secondary / "results" / "café.txt"))          # missing
    (bed.secondary / "results" / "run1" / "stray.txt").write_text("x\n")  # extra
    started, audit = bed.audit()
    assert audit.returncode != 0, audit.stdout[-3000:]
    assert "The mirror differs: 2 differences" in audit.stdout, audit.stdout[-3000:]
    result = bed.summary(started, audit.returncode)
    print(result.stdout)
    assert audit_lines(result.stdout) == [
        "audit           %d entries in the primary, 2 differences (extra 1, missing 1)  (AUDIT FAILED)"
        % count_entries(bed.primary)], result.stdout + result.stderr
    assert "?" not in result.stdout
    assert result.returncode == 1
    assert re.search(r"sample tree +\d+ files .*: NOT mirrored", result.stdout)
    assert "results/café.txt" in result.stdout  # named among the paths not in the copy
    assert "tally           %d files" % (count_entries(bed.primary) - 4) in result.stdout  # 4 dirs and links


def test_summary_of_a_matching_mirror(bed):
    """Runs after the test above (same trees): the copy fixed, the audit and the summary pass."""
    if not (bed.primary / "results" / "café.txt").exists():
        pytest.skip("needs the trees of test_summary_of_an_audit_with_differences")
    shutil.copy2(str(bed.primary / "results" / "café.txt"), str(bed.secondary / "results" / "café.txt"))
    os.remove(str(bed.secondary / "results" / "run1" / "stray.txt"))
    started, audit = bed.audit()
    assert audit.returncode == 0, audit.stdout[-3000:]
    result = bed.summary(started, audit.returncode)
    print(result.stdout)
    entries = count_entries(bed.primary)
    assert entries == 12
    assert audit_lines(result.stdout) == ["audit           12 entries in the primary, 0 differences"]
    assert ": mirrored" in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr

    # The same report read as left over by an earlier audit is refused, not shown.
    stale = bed.summary(time.time() + 5, 0)
    assert re.search(r"^audit +FAILED, .*_source\.jsonl is from an earlier audit", stale.stdout, re.M), stale.stdout
    assert stale.returncode == 1


def test_no_report_is_a_failure_that_names_the_file(tmp_path):
    with pytest.raises(demo_summary.AuditReportError, match="no audit report .*%s_source.jsonl" % FLOW):
        demo_summary.audit_counts(str(tmp_path), FLOW)
    line = demo_summary.audit_line(demo_summary.AuditReportError("no audit report x"), 2)
    assert line == "audit           FAILED, no audit report x (audit.yml exit status 2)"


def test_in_flight_paths_are_not_differences(tmp_path):
    (tmp_path / ("%s_source.jsonl" % FLOW)).write_text(
        '{"manifest":2,"root":"/p"}\n{"path":"a","type":"file"}\n{"path":"b","type":"dir"}\n')
    (tmp_path / ("%s_differences.jsonl" % FLOW)).write_text(
        '{"category":"in_flight","path":"a"}\n{"category":"size","path":"b"}\n{"category":"mtime","path":"b"}\n')
    counts = demo_summary.audit_counts(str(tmp_path), FLOW)
    assert counts == {"entries": 2, "differences": 2, "in_flight": 1, "categories": {"size": 1, "mtime": 1}}
    assert demo_summary.audit_line(counts, 0) == \
        "audit           2 entries in the primary, 2 differences (mtime 1, size 1), 1 in flight"


def test_a_file_that_is_not_a_manifest_is_refused(tmp_path):
    (tmp_path / ("%s_source.jsonl" % FLOW)).write_text('{"path":"a","type":"file"}\n')
    (tmp_path / ("%s_differences.jsonl" % FLOW)).write_text("")
    with pytest.raises(demo_summary.AuditReportError, match="does not start with a manifest header"):
        demo_summary.audit_counts(str(tmp_path), FLOW)


def test_demo_runs_the_summary_on_its_own_audit_report():
    """scripts/demo.sh gives audit.yml and the summary the same report directory, as the tests above do."""
    with open(os.path.join(SCRIPTS, "demo.sh")) as handle:
        demo = handle.read()
    assert 'audit.yml -e audit_report_dir="$audit_dir"' in demo
    assert '--audit-dir "$audit_dir"' in demo and "scripts/demo_summary.py" in demo

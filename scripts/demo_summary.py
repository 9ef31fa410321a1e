"""The one-screen summary that ends `make demo` (scripts/demo.sh).

usage: demo_summary.py --wait JSON --hold S --started EPOCH --audit-rc RC
                       --audit-dir DIR --audit-started EPOCH --flow NAME
                       --tally FILE --tally-before JSON [--tally-timeout S]

The audit line is read from the files audit.yml leaves in its report directory
(audit_report_dir), not from its display text: the source manifest
<flow>_source.jsonl (a header line, then one JSON line per entry) and the
report <flow>_differences.jsonl (one JSON object per difference; paths still
in flight have the category "in_flight" and are not differences). Files older
than the audit run are refused: a failed audit must not show a previous one.
Exit status 0 only when the sample was mirrored and the audit passed.
"""
import argparse
import json
import os
import sys
import time

RULE = 64


class AuditReportError(Exception):
    """The audit left no usable report: the message says which file and why."""


def _json_lines(path, since):
    """Yield (line number, object) of a JSON-lines file written after `since` (epoch seconds)."""
    try:
        modified = os.stat(path).st_mtime
    except OSError as exc:
        raise AuditReportError("no audit report %s (%s)" % (path, exc.strerror))
    if since is not None and modified < since:
        raise AuditReportError("%s is from an earlier audit (written %s, this audit started %s)" % (
            path, time.strftime("%H:%M:%S", time.localtime(modified)),
            time.strftime("%H:%M:%S", time.localtime(since))))
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise AuditReportError("%s line %d is not JSON: %s" % (path, number, exc))
            if not isinstance(value, dict):
                raise AuditReportError("%s line %d is not a JSON object" % (path, number))
            yield number, value


def audit_counts(report_dir, flow, since=None):
    """Entries of the source tree, differences and in-flight paths of the audit's last pass.

    Returns {"entries", "differences", "in_flight", "categories": {category: count}}.
    Raises AuditReportError when a file is missing, stale or malformed.
    """
    manifest = os.path.join(report_dir, "%s_source.jsonl" % flow)
    entries = 0
    for number, value in _json_lines(manifest, since):
        if number == 1:
            if "manifest" not in value:
                raise AuditReportError("%s does not start with a manifest header" % manifest)
            continue
        if "path" not in value:
            raise AuditReportError("%s line %d is not a manifest entry (no path)" % (manifest, number))
        entries += 1
    report = os.path.join(report_dir, "%s_differences.jsonl" % flow)
    differences, in_flight, categories = 0, 0, {}
    for number, value in _json_lines(report, since):
        category = value.get("category")
        if not category:
            raise AuditReportError("%s line %d has no category" % (report, number))
        if category == "in_flight":
            in_flight += 1
            continue
        differences += 1
        categories[category] = categories.get(category, 0) + 1
    return {"entries": entries, "differences": differences, "in_flight": in_flight, "categories": categories}


def audit_line(counts, audit_rc):
    """The summary's audit line, from audit_counts() (or the AuditReportError) and audit.yml's exit status."""
    if isinstance(counts, AuditReportError):
        return "audit           FAILED, %s (audit.yml exit status %s)" % (counts, audit_rc)
    line = "audit           %d entries in the primary, %d differences" % (counts["entries"], counts["differences"])
    if counts["categories"]:
        line += " (%s)" % ", ".join("%s %d" % item for item in sorted(counts["categories"].items()))
    if counts["in_flight"]:
        line += ", %d in flight" % counts["in_flight"]
    if str(audit_rc) != "0":
        line += "  (AUDIT FAILED)"
    return line


def read_tally(path, before, wanted_files, timeout):
    """The tally's report once it counted wanted_files more than `before` (it is rewritten every few seconds)."""
    report, deadline = {}, time.time() + timeout
    while True:
        try:
            with open(path) as handle:
                report = json.load(handle).get("hpc_mirror_tally", {})
        except (OSError, ValueError):
            report = {}
        if report.get("totals", {}).get("files", 0) - before.get("files", 0) >= wanted_files \
                or time.time() >= deadline:
            return report
        time.sleep(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--wait", required=True, help="JSON printed by scripts/wait_mirrored.py")
    parser.add_argument("--hold", required=True, type=float)
    parser.add_argument("--started", required=True, type=float, help="when the demo started (epoch s)")
    parser.add_argument("--audit-rc", required=True)
    parser.add_argument("--audit-dir", required=True, help="audit_report_dir of the audit run")
    parser.add_argument("--audit-started", required=True, type=float)
    parser.add_argument("--flow", required=True, help="flow name, e.g. mirror_primary_to_secondary")
    parser.add_argument("--tally", required=True, help="the tally's metrics file")
    parser.add_argument("--tally-before", default="{}", help="its totals before the sample (JSON)")
    parser.add_argument("--tally-timeout", type=float, default=30)
    parser.add_argument("--primary", default="/var/tmp/hpc_mirror/primary")
    parser.add_argument("--secondary", default="/var/tmp/hpc_mirror/secondary")
    args = parser.parse_args(argv)
    try:
        wait = json.loads(args.wait)
    except ValueError:
        wait = {}
    wait = dict({"converged": False, "seconds": 0, "entries": 0, "files": 0, "bytes": 0}, **wait)
    before = json.loads(args.tally_before or "{}")
    try:
        counts = audit_counts(args.audit_dir, args.flow, since=args.audit_started)
    except AuditReportError as exc:
        counts = exc

    print()
    print("=" * RULE)
    print("sr3.hpc_mirror demo: %s -> %s" % (args.primary, args.secondary))
    print("-" * RULE)
    state = "mirrored" if wait["converged"] else "NOT mirrored after %.0f s" % wait["seconds"]
    print("sample tree     %d files (%.1f MB), %d entries: %s"
          % (wait["files"], wait["bytes"] / 1e6, wait["entries"], state))
    if not wait["converged"] and wait.get("differing"):
        print("  not in the copy as in the primary: %s" % ", ".join(wait["differing"][:8]))
    print("time to copy    %.1f s after the last write (hold %.0f s, lag beyond the hold %.1f s)"
          % (wait["seconds"], args.hold, max(0.0, wait["seconds"] - args.hold)))
    report = read_tally(args.tally, before, wait["files"], args.tally_timeout)
    totals = report.get("totals", {})
    print("tally           %d files, %.1f MB delivered; age of the last files when tallied mean %.1f s, max %.1f s"
          % (totals.get("files", 0) - before.get("files", 0), (totals.get("bytes", 0) - before.get("bytes", 0)) / 1e6,
             report.get("age_mean", 0), report.get("age_max", 0)))
    print(audit_line(counts, args.audit_rc))
    print("demo took       %.0f s in all" % (time.time() - args.started))
    print("=" * RULE)
    audit_ok = str(args.audit_rc) == "0" and not isinstance(counts, AuditReportError)
    return 0 if wait["converged"] and audit_ok else 1


if __name__ == "__main__":
    sys.exit(main())

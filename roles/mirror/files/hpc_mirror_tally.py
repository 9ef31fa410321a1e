"""sr3 flow callback: count what the copiers delivered (shipped by sr3.hpc_mirror).

Used by the tally shovel, which reads the copy stage's output exchange: every
message there is one completed operation on the destination.  Totals since the
first start are kept in a small JSON file beside the shovel's state, so they
survive restarts, and are exposed in sr3's metrics file under the key
``hpc_mirror_tally`` for status tools.

usage (shovel config)::

    flowcb hpc_mirror_tally.Tally
"""

import json
import logging
import os
import time

try:
    from sarracenia import timestr2flt
    from sarracenia.flowcb import FlowCB
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object
    timestr2flt = None

logger = logging.getLogger(__name__)

COUNTERS = ("files", "bytes", "links", "renames", "removes", "directories")


def classify(message):
    """Return the counter a message adds to: a copied file or a file operation."""
    operation = message.get("fileOp") or {}
    if "remove" in operation:
        return "removes"
    if "link" in operation:
        return "links"
    if "directory" in operation:
        return "directories"
    if "rename" in operation and "size" not in message:
        return "renames"
    return "files"


class Counts(object):
    """Totals and the current interval's counts, plus delivery age of files."""

    def __init__(self, totals=None):
        self.totals = dict((name, 0) for name in COUNTERS)
        self.totals.update(dict((k, v) for k, v in (totals or {}).items() if k in COUNTERS))
        self.last_copy = (totals or {}).get("last_copy", 0.0)
        self.reset_interval()

    def reset_interval(self):
        self.interval = dict((name, 0) for name in COUNTERS)
        self.interval_start = time.time()
        self.age_total = 0.0
        self.age_max = 0.0
        self.age_count = 0

    def add(self, message, now=None):
        now = time.time() if now is None else now
        counter = classify(message)
        self.totals[counter] += 1
        self.interval[counter] += 1
        self.last_copy = now
        if counter != "files":
            return
        size = int(message.get("size") or 0)
        self.totals["bytes"] += size
        self.interval["bytes"] += size
        mtime = message.get("mtime")
        if mtime and timestr2flt:
            # Age when tallied: from the last write on the source to delivery.
            age = max(0.0, now - timestr2flt(mtime))
            self.age_total += age
            self.age_count += 1
            self.age_max = max(self.age_max, age)

    def report(self):
        seconds = max(time.time() - self.interval_start, 1e-6)
        return {
            "totals": dict(self.totals),
            "interval": dict(self.interval),
            "interval_seconds": seconds,
            "files_per_second": self.interval["files"] / seconds,
            "bytes_per_second": self.interval["bytes"] / seconds,
            "age_mean": self.age_total / self.age_count if self.age_count else 0.0,
            "age_max": self.age_max,
            "last_copy": self.last_copy,
        }


class Tally(FlowCB):

    def __init__(self, options):
        super().__init__(options, logger)
        self.state_file = os.path.join(os.path.dirname(self.o.pid_filename), "hpc_mirror_tally.json")
        self.counts = Counts(self._load())

    def _load(self):
        try:
            with open(self.state_file) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def _save(self):
        state = dict(self.counts.totals, last_copy=self.counts.last_copy)
        temporary = self.state_file + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(state, handle)
        os.replace(temporary, self.state_file)

    def after_accept(self, worklist):
        for message in worklist.incoming:
            self.counts.add(message)

    def metricsReport(self):
        return self.counts.report()

    def on_housekeeping(self):
        report = self.counts.report()
        logger.info("tally: interval %s totals %s age mean %.2fs max %.2fs",
                    report["interval"], report["totals"], report["age_mean"], report["age_max"])
        self._save()
        self.counts.reset_interval()

    def on_stop(self):
        self._save()

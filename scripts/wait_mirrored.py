"""Wait until a destination tree equals a source tree; print what it took.

usage: wait_mirrored.py SOURCE DESTINATION TIMEOUT_SECONDS

Compares type, content (sha256) and symlink targets of every entry, polling
every 0.2 s. Prints one JSON object: converged, seconds, entries, files, bytes,
and the differing paths when it gave up. Exit status 0 only when converged.
"""
import hashlib
import json
import os
import sys
import time


def snapshot(root):
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                entries[relative] = ("link", os.readlink(path), 0)
            elif os.path.isdir(path):
                entries[relative] = ("dir", "", 0)
            else:
                try:
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    data = b"<unreadable>"
                entries[relative] = ("file", hashlib.sha256(data).hexdigest(), len(data))
    return entries


def main(source, destination, timeout):
    start = time.time()
    while True:
        wanted, have = snapshot(source), snapshot(destination)
        elapsed = time.time() - start
        if wanted == have or elapsed > timeout:
            break
        time.sleep(0.2)
    files = [entry for entry in wanted.values() if entry[0] == "file"]
    result = {
        "converged": wanted == have,
        "seconds": round(elapsed, 2),
        "entries": len(wanted),
        "files": len(files),
        "bytes": sum(entry[2] for entry in files),
    }
    if wanted != have:
        result["differing"] = sorted(p for p in set(wanted) | set(have) if wanted.get(p) != have.get(p))[:20]
    print(json.dumps(result))
    return 0 if result["converged"] else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))

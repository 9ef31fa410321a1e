# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A generated corpus of hostile file names, and a byte-exact tree comparison.

Every name a POSIX file system allows (any bytes but ``/`` and NUL, at most 255
bytes, paths up to PATH_MAX) must reach the mirror's copy. The corpus is
generated, not a fixed list: each run draws its names from a seed, printed so
that a failure can be replayed (``HPC_MIRROR_CORPUS_SEED=<seed>``).

As a script::

    python3 tests/corpus/hostile_names.py write ROOT [--seed N]
    python3 tests/corpus/hostile_names.py compare SOURCE COPY
    python3 tests/corpus/hostile_names.py names [--seed N]

As a module: ``names(rng)``, ``write_corpus(root, seed)``, ``compare_trees(a, b)``.
Paths are bytes throughout.
"""

import argparse
import hashlib
import json
import os
import random
import stat
import sys
import unicodedata

SEED_ENV = "HPC_MIRROR_CORPUS_SEED"
NAME_MAX = 255
PATH_MAX = 4096  # including the terminating NUL
BIG_SIZE = 1536 * 1024 + 7  # above sr3's accelThreshold (1 MiB)
# Suffixes the mirror rejects on purpose (hpc_mirror_reject): never generated.
REJECTED_SUFFIXES = (b".tmp", b".lock")

WORDS = ["data", "run", "output", "résumé", "naïve", "Ångström", "café", "über", "grün", "jalapeño"]
CJK = "日本語中文한국어漢字テスト文件"
EMOJI = ["\U0001F600", "\U0001F680", "\U0001F9EC", "\u2764\ufe0f", "\U0001F468\u200d\U0001F469\u200d\U0001F467"]
SPECIAL = b"%#*?[]\\'\"`$&;|<>(){}!~^= ,:@+"


def seed_from(seed=None):
    """The seed to use: the argument, else $HPC_MIRROR_CORPUS_SEED, else a fresh one."""
    if seed is None:
        seed = os.environ.get(SEED_ENV)
    if seed is None or seed == "":
        seed = random.SystemRandom().randrange(1, 2 ** 31)
    return int(seed)


def _word(rng):
    return rng.choice(WORDS).encode("utf-8")


def _latin1(rng):
    # Latin-1 bytes, never valid UTF-8 (an accented letter alone, outside a sequence).
    text = rng.choice(["café", "déjà vu", "naïve", "Müller", "señor", "ÿ"])
    return text.encode("latin-1") + b"_%d" % rng.randrange(1000)


def _random_bytes(rng):
    # Any byte a name may hold (all but NUL and '/'), high bytes included.
    allowed = [b for b in range(1, 256) if b != ord("/")]
    return bytes(rng.choice(allowed) for _unused in range(rng.randrange(3, 24)))


def _control(rng):
    return _word(rng) + bytes([rng.choice([1, 7, 8, 13, 27, 31, 127])]) + b"ctl"


def _nfc_nfd(rng):
    word = rng.choice(["é", "ñ", "ö", "Å", "ç"]) + rng.choice(WORDS)
    return [unicodedata.normalize("NFC", word).encode("utf-8"), unicodedata.normalize("NFD", word).encode("utf-8")]


def _special(rng, char):
    return _word(rng) + char + _word(rng)


def _long_name(rng):
    """A name of exactly NAME_MAX bytes, ending in multibyte characters when it can."""
    head = rng.choice(["long", "日本", "é"]).encode("utf-8")
    filler = "あ".encode("utf-8")
    name = head
    while len(name) + len(filler) <= NAME_MAX:
        name += filler
    return name + b"x" * (NAME_MAX - len(name))


# class -> function(rng) returning one name (bytes) or a list of names
NAME_CLASSES = {
    "ascii_space": lambda rng: _word(rng) + b" with spaces ",
    "utf8_latin": lambda rng: ("%s_%d" % (rng.choice(WORDS[3:]), rng.randrange(100))).encode("utf-8"),
    "nfc_nfd": _nfc_nfd,
    "cjk": lambda rng: "".join(rng.choice(CJK) for _unused in range(rng.randrange(2, 8))).encode("utf-8"),
    "emoji": lambda rng: ("".join(rng.choice(EMOJI) for _unused in range(2)) + "_%d" % rng.randrange(100)).encode("utf-8"),
    "latin1_not_utf8": _latin1,
    "random_bytes": _random_bytes,
    "newline": lambda rng: _special(rng, b"\n"),
    "trailing_newline": lambda rng: _word(rng) + b"\n",
    "tab": lambda rng: _special(rng, b"\t"),
    "control": _control,
    "percent": lambda rng: _word(rng) + b"%20%41%" + _word(rng),
    "hash": lambda rng: b"#" + _word(rng) + b"#",
    "star": lambda rng: _special(rng, b"*"),
    "question": lambda rng: _special(rng, b"?"),
    "bracket": lambda rng: b"[" + _word(rng) + b"]" + _special(rng, b"["),
    "backslash": lambda rng: _special(rng, b"\\") + b"\\",
    "quotes": lambda rng: b"'" + _word(rng) + b"\"" + _special(rng, b"`"),
    "shell_meta": lambda rng: _special(rng, bytes(rng.sample(list(SPECIAL), 4))),
    "dollar": lambda rng: rng.choice([b"${HOME}", b"${YYYYMMDD}", b"$$", b"$1", b"${%Y}", b"$(date)", b"$"])
    + _word(rng),
    "leading_dash": lambda rng: b"-" + _word(rng),
    "leading_double_dash": lambda rng: b"--" + _word(rng) + b"=x",
    "leading_dot": lambda rng: b"." + _word(rng),
    "dots_only": lambda rng: b"..." + b"." * rng.randrange(3),
    "name_max": _long_name,
}


def _fix(name):
    """A usable name: no NUL or '/', not . or .., at most NAME_MAX bytes, not a rejected suffix."""
    name = name.replace(b"\0", b"_").replace(b"/", b"_")[:NAME_MAX]
    if name in (b"", b".", b".."):
        name = b"_" + name
    for suffix in REJECTED_SUFFIXES:
        if name.endswith(suffix):
            name = name[:-1] + b"_"
    return name


def names(rng, combinations=8):
    """[(class, name)]: every class at least once, plus random combinations of classes."""
    out = []
    for cls in sorted(NAME_CLASSES):
        made = NAME_CLASSES[cls](rng)
        for name in (made if isinstance(made, list) else [made]):
            out.append((cls, _fix(name)))
    simple = [c for c in sorted(NAME_CLASSES) if c not in ("name_max", "nfc_nfd")]
    for _unused in range(combinations):
        parts = rng.sample(simple, rng.randrange(2, 4))
        name = b"".join(NAME_CLASSES[c](rng) for c in parts)
        out.append(("combo:" + "+".join(parts), _fix(name)))
    seen, unique = set(), []
    for cls, name in out:
        if name not in seen:
            seen.add(name)
            unique.append((cls, name))
    return unique


def near_path_max(rng, budget):
    """A relative path of directories (and a file) of at most budget (+1) bytes, within 16 of it; no name over NAME_MAX."""
    parts, used = [], 0
    while budget - used > NAME_MAX:
        size = rng.randrange(180, NAME_MAX + 1)
        stem = ("d%d_" % len(parts)).encode() + "é".encode("utf-8") * 3
        parts.append(stem + b"p" * (size - len(stem)))
        used += size + 1
    last = budget - used
    parts.append(b"f" * max(1, last - rng.randrange(0, 16)))
    return b"/".join(parts)


def _content(rng, size):
    return rng.getrandbits(8 * size).to_bytes(size, "little") if size else b""


class Corpus(object):
    """What write_corpus wrote: entries (relative path bytes -> class) and the seed."""

    def __init__(self, seed):
        self.seed = seed
        self.entries = {}

    def add(self, rel, cls):
        self.entries[rel] = cls

    def save(self, path):
        """Write the entries as JSON (paths as hex: any byte survives)."""
        with open(path, "w") as fh:
            json.dump({"seed": self.seed, "entries": {rel.hex(): cls for rel, cls in self.entries.items()}}, fh)

    @classmethod
    def load(cls, path):
        with open(path) as fh:
            data = json.load(fh)
        corpus = cls(data["seed"])
        corpus.entries = {bytes.fromhex(rel): c for rel, c in data["entries"].items()}
        return corpus

    def classes(self):
        out = {}
        for rel, cls in self.entries.items():
            out.setdefault(cls, []).append(rel)
        return out


def write_corpus(root, seed=None, combinations=8, depth=40, path_budget=None, big=True):
    """Write a hostile-name tree under root (bytes or str), return a Corpus.

    path_budget: the longest relative path to write (default: what keeps
    ``root`` + path under PATH_MAX with 64 bytes to spare, for a longer root on
    the other side or a temporary name).
    """
    seed = seed_from(seed)
    rng = random.Random(seed)
    root = os.fsencode(root)
    corpus = Corpus(seed)
    top = b"hostile_%d" % seed
    base = os.path.join(root, top)
    os.makedirs(base)
    corpus.add(top, "dir")
    sizes = [0, 1, 17, 4096, 65537]
    generated = names(rng, combinations)

    def put(rel, cls, size=None, mode=0o644):
        path = os.path.join(base, rel)
        with open(path, "wb") as fh:
            fh.write(_content(rng, rng.choice(sizes) if size is None else size))
        os.chmod(path, mode)
        corpus.add(top + b"/" + rel, cls)

    # Every name as a file, with various sizes and modes.
    for cls, name in generated:
        put(name, cls, mode=rng.choice([0o644, 0o600, 0o640, 0o755, 0o664]))
    # Every name as a directory holding a file with a hostile name too.
    for cls, name in generated:
        if cls.startswith("combo") or cls == "name_max":
            continue
        dname = _fix(name + b".d")
        os.mkdir(os.path.join(base, dname))
        corpus.add(top + b"/" + dname, "dir:" + cls)
        other_cls, other = rng.choice(generated)
        put(dname + b"/" + other, "in_dir:" + cls + "/" + other_cls)
    # Empty files and empty directories with hostile names.
    for cls, name in rng.sample(generated, 4):
        os.mkdir(os.path.join(base, _fix(b"empty dir " + name)))
        corpus.add(top + b"/" + _fix(b"empty dir " + name), "empty_dir:" + cls)
    # A large file with a space in its name (above accelThreshold) and one with a hostile name.
    if big:
        put(b"big file with spaces.bin", "big_space", size=BIG_SIZE)
        cls, name = rng.choice([g for g in generated if g[0] in ("latin1_not_utf8", "cjk", "newline")])
        put(_fix(b"big " + name), "big:" + cls, size=BIG_SIZE + 1)
    # Symbolic links with hostile targets (dangling, absolute, relative up, to hostile names).
    targets = [(b"dangling", _fix(b"nowhere " + generated[0][1])),
               (b"absolute", b"/nonexistent/" + rng.choice(generated)[1]),
               (b"relative_up", b"../" + top + b"/" + rng.choice(generated)[1]),
               (b"to_file", rng.choice(generated)[1]),
               (b"to_dir", _fix(rng.choice([g for g in generated if not g[0].startswith("combo")
                                            and g[0] != "name_max"])[1] + b".d")),
               (b"target_newline", b"a\nb"),
               (b"target_not_utf8", b"caf\xe9/\xff")]
    for kind, target in targets:
        cls, name = rng.choice(generated)
        link = _fix(b"link " + kind + b" " + name)
        os.symlink(target, os.path.join(base, link))
        corpus.add(top + b"/" + link, "symlink_" + kind.decode() + ":" + cls)
    # Hard links: a second name for a file, in another directory.
    os.mkdir(os.path.join(base, b"hard links"))
    corpus.add(top + b"/hard links", "dir")
    for cls, name in rng.sample(generated, 3):
        link = b"hard links/" + _fix(b"hard " + name)
        os.link(os.path.join(base, name), os.path.join(base, link))
        corpus.add(top + b"/" + link, "hardlink:" + cls)
    # A deep tree of hostile directory names.
    rel = b"deep"
    os.mkdir(os.path.join(base, rel))
    for level in range(depth):
        cls, name = rng.choice(generated)
        rel += b"/" + _fix(b"%d" % level + name[:20])
        if len(rel) > 3000:
            break
        os.mkdir(os.path.join(base, rel))
    put(rel + b"/" + _fix(b"bottom " + rng.choice(generated)[1]), "deep_tree")
    # A path close to PATH_MAX.
    if path_budget is None:
        path_budget = PATH_MAX - 1 - len(base) - 1 - 64
    long_rel = near_path_max(rng, path_budget - len(b"nearmax/"))
    os.makedirs(os.path.join(base, b"nearmax", os.path.dirname(long_rel)))
    put(b"nearmax/" + long_rel, "near_path_max", size=3)
    return corpus


# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------

def _walk(root):
    """Relative path bytes -> lstat result, for every entry below root (root excluded)."""
    out = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for entry in it:
                child = os.path.join(rel, entry.name) if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                out[child] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)
    return out


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def show(rel):
    """A path for humans: repr of the bytes (every hostile byte visible)."""
    return repr(bytes(rel))[1:]


def compare_trees(source, copy, mtime=True, mtime_tolerance=0.0, dir_mtime=False, modes=True, under=None,
                  detail=False):
    """Differences between two trees, as readable lines (empty when they match byte for byte).

    Compares names as bytes, types, file contents, permission bits (files and
    directories), mtimes (files and symlinks; directories only with
    dir_mtime, since creating an entry changes its parent's) within
    mtime_tolerance seconds, and symlink targets. under (bytes) limits both
    sides to that relative subtree. With detail, each difference is a tuple
    (category, relative path bytes, line).
    """
    source, copy = os.fsencode(source), os.fsencode(copy)
    if under is not None:
        under = os.fsencode(under)
        source, copy = os.path.join(source, under), os.path.join(copy, under)
        if not os.path.lexists(copy):
            line = "missing in copy: the whole subtree %s" % show(under)
            return [("missing", b"", line)] if detail else [line]
    left, right = _walk(source), _walk(copy)
    diffs = []

    def add(category, rel, line):
        diffs.append((category, rel, line) if detail else line)
    for rel in sorted(set(left) | set(right)):
        shown = show(rel)
        if rel not in right:
            add("missing", rel, "missing in copy: %s" % shown)
            continue
        if rel not in left:
            add("extra", rel, "extra in copy: %s" % shown)
            continue
        a, b = left[rel], right[rel]
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            add("type", rel, "type: %s is %s in the source, %s in the copy" % (shown, _kind(a), _kind(b)))
            continue
        if stat.S_ISLNK(a.st_mode):
            ta, tb = os.readlink(os.path.join(source, rel)), os.readlink(os.path.join(copy, rel))
            if ta != tb:
                add("symlink_target", rel,
                    "symlink target: %s -> %s in the source, -> %s in the copy" % (shown, show(ta), show(tb)))
        elif stat.S_ISREG(a.st_mode):
            if a.st_size != b.st_size:
                add("size", rel, "size: %s %d in the source, %d in the copy" % (shown, a.st_size, b.st_size))
            elif _digest(os.path.join(source, rel)) != _digest(os.path.join(copy, rel)):
                add("content", rel, "content: %s differs" % shown)
        if modes and not stat.S_ISLNK(a.st_mode) and stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode):
            add("mode", rel, "mode: %s %04o in the source, %04o in the copy"
                % (shown, stat.S_IMODE(a.st_mode), stat.S_IMODE(b.st_mode)))
        if mtime and (dir_mtime or not stat.S_ISDIR(a.st_mode)):
            if abs(a.st_mtime_ns - b.st_mtime_ns) > mtime_tolerance * 1e9:
                kind = "symlink mtime" if stat.S_ISLNK(a.st_mode) else "mtime"
                add(kind.replace(" ", "_"), rel, "%s: %s %.9f in the source, %.9f in the copy"
                    % (kind, shown, a.st_mtime_ns / 1e9, b.st_mtime_ns / 1e9))
    return diffs


def staged_script(owner):
    """A directory of its own holding a copy of this script, for owner (a user name) to run it.

    Returns (directory, script, manifest path). A directory per run: a manifest
    another user left in /tmp must not decide this one. The caller removes it.
    """
    import shutil  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel
    work = tempfile.mkdtemp(prefix="hpc_mirror_hostile_names.")
    os.chmod(work, 0o755)
    shutil.chown(work, user=owner)
    script = os.path.join(work, "hostile_names.py")
    shutil.copy(os.path.abspath(__file__), script)
    os.chmod(script, 0o644)
    return work, script, os.path.join(work, "corpus.json")


def wait_for_copy(source, copy, under, timeout, quiet=5.0, interval=2.0, stable=None, **compare):
    """Detailed differences of the subtree under, once it matches or timeout passed.

    Differences still there at the end are compared once more after quiet
    seconds: what was in flight (a large file) has landed by then. With
    stable, the wait also ends once the differences stayed the same for that
    many seconds (a posting side known to lose some names: waiting longer
    changes nothing).
    """
    import time  # pylint: disable=import-outside-toplevel
    deadline = time.time() + timeout
    last, since = None, time.time()
    while True:
        diffs = compare_trees(source, copy, under=under, detail=True, **compare)
        if not diffs:
            return diffs
        if diffs != last:
            last, since = diffs, time.time()
        if time.time() > deadline or (stable is not None and time.time() - since >= stable):
            time.sleep(quiet)
            return compare_trees(source, copy, under=under, detail=True, **compare)
        time.sleep(interval)


def class_of(corpus, rel):
    """The corpus class of a path relative to the corpus root: its own, or that of its closest listed parent."""
    path = rel
    while path and path not in corpus.entries:
        path = os.path.dirname(path)
    return corpus.entries.get(path, "?")


def reported_under(report, top):
    """Sorted (path, category) of an audit report's differences (JSON lines) under the relative path top."""
    prefix = os.fsdecode(top) + "/"
    with open(report, "rb") as fh:
        reported = [(d["path"], d["category"]) for d in map(json.loads, fh)]
    return sorted(entry for entry in reported if (entry[0] + "/").startswith(prefix))


def _kind(st):
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a file")):
        if test(st.st_mode):
            return name
    return "special"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a corpus under ROOT")
    write.add_argument("root")
    write.add_argument("--seed", type=int)
    write.add_argument("--manifest", help="write what was written, with each entry's class, to this JSON file")
    listing = sub.add_parser("names", help="print the generated names")
    listing.add_argument("--seed", type=int)
    compare = sub.add_parser("compare", help="compare two trees byte for byte")
    compare.add_argument("source")
    compare.add_argument("copy")
    compare.add_argument("--no-mtime", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "compare":
        diffs = compare_trees(args.source, args.copy, mtime=not args.no_mtime)
        for line in diffs:
            print(line)
        print("%d differences" % len(diffs))
        return 1 if diffs else 0
    seed = seed_from(args.seed)
    print("hostile names seed %d (%s=%d to replay)" % (seed, SEED_ENV, seed), file=sys.stderr)
    if args.command == "names":
        for cls, name in names(random.Random(seed)):
            print("%-28s %s" % (cls, show(name)))
        return 0
    corpus = write_corpus(args.root, seed)
    if args.manifest:
        corpus.save(args.manifest)
    top = os.path.join(os.fsencode(args.root), b"hostile_%d" % seed)
    print("%d entries written under %s" % (len(corpus.entries), show(top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

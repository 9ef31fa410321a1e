"""Crafted messages against the running single-host mirror: nothing outside the trees
is written, read into the copy or removed, and every rejection is logged and counted.

Messages are published with the deployment's own broker credentials (what any
node or shim job holds) straight to the copy exchange, skipping the winnows, and
to a winnow exchange, as a hostile job could.
"""

import json
import time

testinfra_hosts = ["broker-local"]

USER = "opsmtest"
ROOT = "/var/tmp/hpc_mirror_molecule"
PRIMARY = ROOT + "/primary"
SECONDARY = ROOT + "/secondary"
OUTSIDE = ROOT + "/outside"
VHOST = "hpc_mirror_molecule"
PASSWORD = "m0lecule-Test:pw/with@chars"
FLOW = "mirror_primary_to_secondary"
# Long enough for the hold (3 s), a copier pass and its housekeeping (30 s).
SETTLE = 45

PUBLISH = r'''
import json, os, sys, time, amqp
exchange, messages = sys.argv[1], json.loads(sys.argv[2])
connection = amqp.Connection(host="localhost", userid=os.environ["BROKER_USER"],
                             password=os.environ["BROKER_PASSWORD"], virtual_host=os.environ["BROKER_VHOST"])
connection.connect()
channel = connection.channel()
now = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
for fields in messages:
    body = {"pubTime": now, "baseUrl": "file:/", "mtime": now, "atime": now, "mode": "644", "size": 6}
    body.update(fields)
    key = "v03." + ".".join(body["relPath"].strip("/").split("/")[:-1])
    channel.basic_publish(amqp.Message(json.dumps(body), content_type="application/json",
                                       application_headers={}), exchange=exchange, routing_key=key)
connection.close()
'''


def sr3_python(host):
    return host.user(USER).home + "/.local/share/hpc_mirror/venv/bin/python"


def exchange(host, suffix):
    out = host.check_output("rabbitmqctl -q list_exchanges -p %s name", VHOST)
    names = [line.strip() for line in out.splitlines() if FLOW in line and line.strip().endswith(suffix)]
    assert names, "no exchange of %s ending in %s in %r" % (FLOW, suffix, out)
    return sorted(names)[0]


def publish(host, exchange_name, messages):
    result = host.run("env BROKER_USER=%s BROKER_PASSWORD=%s BROKER_VHOST=%s %s -c %s %s %s",
                      USER, PASSWORD, VHOST, sr3_python(host), PUBLISH, exchange_name, json.dumps(messages))
    assert result.rc == 0, result.stderr


def as_user(host, script):
    return host.run("runuser -u %s -- bash -c %s", USER, script)


def copier_logs(host):
    home = host.user(USER).home
    return host.run("cat %s/.cache/sr3/log/sarra_%s_copy_0*.log", home, FLOW).stdout


def counted_rejections(host):
    home = host.user(USER).home
    total = {}
    for n in (1, 2):
        path = "%s/.cache/sr3/sarra/%s_copy/hpc_mirror_copier_%02d.json" % (home, FLOW, n)
        if host.file(path).exists:
            for reason, count in json.loads(host.file(path).content_string)["rejected"].items():
                total[reason] = total.get(reason, 0) + count
    return total


def snapshot(host, root):
    """path -> (mode, size, mtime, sha256) of every entry below root (as root sees it)."""
    script = r'''
import hashlib, json, os, sys
out = {}
for d, dirs, files in os.walk(sys.argv[1]):
    for n in dirs + files:
        p = os.path.join(d, n); st = os.lstat(p)
        digest = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) and not os.path.islink(p) else ""
        out[p] = [st.st_mode, st.st_size, st.st_mtime_ns, digest]
print(json.dumps(out))
'''
    return json.loads(host.check_output("python3 -c %s %s", script, root))


def test_crafted_messages_reach_nothing_outside_the_trees(host):
    home = host.user(USER).home
    credentials = home + "/.config/sr3/credentials.conf"
    # Outside both trees: a secret the ops user can read, a file it can write.
    host.run("install -d -o %s -m 0755 %s && echo secret-data > %s/secret && echo victim > %s/victim"
             " && chown %s %s/* && chmod 0644 %s/*", USER, OUTSIDE, OUTSIDE, OUTSIDE, USER, OUTSIDE, OUTSIDE)
    # A link in the source to a directory outside: mirrored as a link (its target is data).
    assert as_user(host, "mkdir -p %s/hostile && ln -sfn %s %s/hostile/evil && echo tool > %s/hostile/tool"
                   " && chmod 4755 %s/hostile/tool" % (PRIMARY, OUTSIDE, PRIMARY, PRIMARY, PRIMARY)).rc == 0
    deadline = time.time() + 60
    while not (host.file(SECONDARY + "/hostile/evil").is_symlink and host.file(SECONDARY + "/hostile/tool").exists):
        assert time.time() < deadline, "the hostile directory was not mirrored"
        time.sleep(1)
    outside_before = snapshot(host, OUTSIDE)
    home_before = snapshot(host, home + "/.config")
    before_counts = counted_rejections(host)

    source = PRIMARY.lstrip("/")
    crafted = [
        # '..' in relPath: read a file outside, write it outside, delete outside
        {"relPath": source + "/hostile/../../outside/secret"},
        {"relPath": source + "/hostile/../../outside/victim", "fileOp": {"remove": ""}},
        # relPath outside the source: the ops user's credentials into the copy
        {"relPath": credentials.lstrip("/")},
        # a foreign baseUrl naming the same relative path
        {"baseUrl": "file:" + home + "/", "relPath": source + "/hostile/stolen"},
        # a rename and a hard link pulling files from outside into the copy
        {"relPath": source + "/hostile/renamed", "fileOp": {"rename": OUTSIDE + "/victim"}},
        {"relPath": source + "/hostile/hardlink", "fileOp": {"hlink": credentials}},
        # through the mirrored link: write, remove
        {"relPath": source + "/hostile/evil/planted"},
        {"relPath": source + "/hostile/evil/victim", "fileOp": {"remove": ""}},
        # inline content
        {"relPath": source + "/hostile/inline.txt", "content": {"encoding": "utf-8", "value": "pwned\n"}},
        # setuid asked for on a real file
        {"relPath": source + "/hostile/tool", "mode": "6777", "mtime": "20990101T000000"},
    ]
    publish(host, exchange(host, "_copy"), crafted)
    # The same through a winnow, which any posting node can reach.
    publish(host, exchange(host, "_winnow00"), crafted[:3])
    time.sleep(SETTLE)

    assert snapshot(host, OUTSIDE) == outside_before
    assert snapshot(host, home + "/.config") == home_before
    for name in ("stolen", "renamed", "hardlink", "inline.txt", "secret", "credentials.conf"):
        assert not host.file(SECONDARY + "/hostile/" + name).exists, name
    assert host.run("grep -rl -e secret-data -e %s %s", PASSWORD[:8], SECONDARY).stdout == ""
    tool = host.file(SECONDARY + "/hostile/tool")
    assert tool.mode & 0o6000 == 0, oct(tool.mode)

    logs = copier_logs(host)
    for reason in ("bad_path", "path_outside_tree", "foreign_base_url", "symlinked_parent", "inline_content"):
        assert "rejected (%s)" % reason in logs, reason
    deadline = time.time() + 60
    while True:
        counts = counted_rejections(host)
        grown = {reason: counts.get(reason, 0) - before_counts.get(reason, 0) for reason in counts}
        if sum(grown.values()) >= len(crafted) - 1 + 3 or time.time() > deadline:
            break
        time.sleep(2)
    # every crafted message but the setuid one is refused (that one is masked), the winnow's three too
    assert sum(grown.values()) == len(crafted) - 1 + 3, grown
    assert grown == {"bad_path": 2 + 2, "path_outside_tree": 3 + 1, "foreign_base_url": 1, "symlinked_parent": 2,
                     "inline_content": 1}

    as_user(host, "rm -rf %s/hostile" % PRIMARY)
    host.run("rm -rf %s", OUTSIDE)
    # The tests after this one compare whole trees: wait until the removal reached the copy.
    deadline = time.time() + 120
    while host.file(SECONDARY + "/hostile").exists and time.time() < deadline:
        time.sleep(1)
    assert not host.file(SECONDARY + "/hostile").exists

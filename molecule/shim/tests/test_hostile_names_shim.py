"""The hostile-name corpus written by a job under the shim wrapper (sr3c's
libsr3shim posts every write): every name sr3c can post reaches the copy through
the events, and the audit's repair brings the rest (sr3c_corpus.py)."""

import sr3c_corpus

testinfra_hosts = ["broker-local"]

WRAPPER = "/home/%s/.local/bin/hpc_mirror_shim" % sr3c_corpus.USER


def test_hostile_names_under_the_shim(host):
    sr3c_corpus.check(host, WRAPPER, "shim")

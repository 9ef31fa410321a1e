# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the broker_url filter: encoding, virtual hosts, schemes, and how sr3 reads the result."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from urllib.parse import urlparse, unquote

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.sr3.hpc_mirror.plugins.filter.broker_url import FilterModule, broker_url


def test_registered_as_filter():
    assert FilterModule().filters()["broker_url"] is broker_url


def test_defaults():
    assert broker_url("opsm", "broker.example") == "amqp://opsm@broker.example:5672/"


def test_config_url_has_no_password():
    url = broker_url("opsm", "broker.example", 5672, "/")
    assert url == "amqp://opsm@broker.example:5672/"
    assert ":" not in urlparse(url).netloc.split("@")[0]


def test_password_plain():
    assert broker_url("opsm", "b", 5672, "/", "amqp", "secret") == "amqp://opsm:secret@b:5672/"


@pytest.mark.parametrize("password, encoded", [
    ("a:b", "a%3Ab"),
    ("a/b", "a%2Fb"),
    ("a@b", "a%40b"),
    ("a%b", "a%25b"),
    ("p:/@%w", "p%3A%2F%40%25w"),
    ("%41", "%2541"),  # an already-encoded looking password is encoded again, not trusted
    ("sp ace#?", "sp%20ace%23%3F"),
])
def test_password_url_encoded(password, encoded):
    url = broker_url("opsm", "broker.example", 5672, "/", "amqp", password)
    assert url == "amqp://opsm:%s@broker.example:5672/" % encoded
    parsed = urlparse(url)
    # the URL still parses to the right host, port and path, and decodes to the password
    assert parsed.hostname == "broker.example"
    assert parsed.port == 5672
    assert parsed.path == "/"
    assert unquote(parsed.password) == password
    assert unquote(parsed.username) == "opsm"


@pytest.mark.parametrize("password", ["p:/@%w", "plain", "x@y:z/%20"])
def test_sr3_decodes_the_password(password):
    """sr3's own URL parser (used for credentials.conf) gets the original password back."""
    from sarracenia.config import credentials
    parsed = credentials._urlparse(broker_url("opsm", "broker.example", 5671, "/", "amqps", password))
    assert parsed.password == password
    assert parsed.username == "opsm"
    assert parsed.hostname == "broker.example"
    assert parsed.port == 5671


def test_user_is_encoded_too():
    assert broker_url("op@s", "b") == "amqp://op%40s@b:5672/"


@pytest.mark.parametrize("vhost", ["/", "", None])
def test_default_vhost(vhost):
    assert broker_url("opsm", "b", 5672, vhost) == "amqp://opsm@b:5672/"


def test_named_vhost():
    url = broker_url("opsm", "b", 5672, "hpc")
    assert url == "amqp://opsm@b:5672/hpc"
    # sr3 takes the vhost from the URL path with slashes stripped
    assert urlparse(url).path.strip("/") == "hpc"


def test_named_vhost_with_password():
    assert broker_url("opsm", "b", 5672, "hpc", "amqp", "p@ss") == "amqp://opsm:p%40ss@b:5672/hpc"


def test_vhost_special_characters_encoded():
    assert broker_url("opsm", "b", 5672, "a/b") == "amqp://opsm@b:5672/a%2Fb"


def test_amqps_and_port():
    assert broker_url("opsm", "b", 5671, "/", "amqps") == "amqps://opsm@b:5671/"


def test_port_as_string():
    assert broker_url("opsm", "b", "15672") == "amqp://opsm@b:15672/"


def test_empty_password_is_no_password():
    assert broker_url("opsm", "b", 5672, "/", "amqp", "") == "amqp://opsm@b:5672/"
    assert broker_url("opsm", "b", 5672, "/", "amqp", None) == "amqp://opsm@b:5672/"


@pytest.mark.parametrize("scheme", ["http", "AMQP", "mqtt", "", "amqp://"])
def test_bad_scheme(scheme):
    with pytest.raises(AnsibleFilterError, match="scheme"):
        broker_url("opsm", "b", 5672, "/", scheme)


@pytest.mark.parametrize("user, host", [("", "b"), ("opsm", ""), (None, "b"), ("opsm", None)])
def test_user_and_host_required(user, host):
    with pytest.raises(AnsibleFilterError, match="required"):
        broker_url(user, host)

"""The broker host: RabbitMQ runs inside its namespace, and every queue of the
flow is bound to its exchange."""

from testbed import group_vars

testinfra_hosts = ["broker"]

VARS = group_vars()
VHOST = VARS["hpc_mirror_broker_vhost"]
USER = VARS["hpc_mirror_broker_user"]
FLOW = "mirror_primary_to_secondary"


def bindings(host):
    out = host.check_output("rabbitmqctl -q list_bindings -p %s source_name destination_name", VHOST)
    return {tuple(line.split("\t")) for line in out.splitlines() if line.strip()}


def test_rabbitmq_listens_on_the_broker_address_only(host):
    assert host.socket("tcp://10.199.77.10:5672").is_listening
    assert not host.socket("tcp://0.0.0.0:5672").is_listening


def test_queues_are_bound(host):
    found = bindings(host)
    prefix = "xs_%s_%s" % (USER, FLOW)
    expected_sources = {"%s_winnow%02d" % (prefix, i) for i in range(VARS["hpc_mirror_winnows"])}
    expected_sources |= {prefix + "_copy", prefix + "_output"}
    bound_sources = {source for source, queue in found if queue.startswith("q_%s." % USER)}
    assert expected_sources <= bound_sources, found


def test_guest_is_gone_and_cannot_log_in(host):
    users = host.check_output("rabbitmqctl -q list_users --formatter json")
    assert '"guest"' not in users
    assert '"%s"' % USER in users
    # the well-known guest/guest, on stdin as the role passes passwords
    refused = host.run("printf guest | rabbitmqctl -q authenticate_user guest")
    assert refused.rc != 0
    assert "failed to authenticate" in refused.stdout + refused.stderr


def test_the_ops_user_keeps_its_least_privilege_permissions(host):
    out = host.check_output("rabbitmqctl -q list_user_permissions %s", USER)
    rows = [line.split("\t") for line in out.splitlines() if line.split("\t")[0] == VHOST]
    assert len(rows) == 1, out
    assert rows[0][1:] == ["^q_%s.*|^xs_%s.*" % (USER, USER)] * 2 + ["^q_%s.*|^x[lrs]_%s.*|^x.*public$" % (USER, USER)]
    assert "management" in host.check_output("rabbitmqctl -q list_users")

"""Test order of the scenario's verify: the modules in file order (molecule passes
them sorted), except the ops lifecycle, which removes the flow: always last."""

LAST = "test_ops_lifecycle_two_clusters.py"


def pytest_collection_modifyitems(items):
    # a stable sort: only the last module's tests move, each keeps its order
    items.sort(key=lambda item: item.path.name == LAST)

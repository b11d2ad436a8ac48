"""The order of the tests: the module of the chained pipeline first (the longest), so that under `make test`'s
`pytest -n 2 --dist loadfile` one worker runs it while the other takes every other module."""


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")

"""The order of the tests, for `make test`'s `pytest -n 2 --dist loadfile --no-loadscope-reorder` (each
module on one worker, in this order): the pipeline's module first and in it the chain (01-04 through
papermill, the longest test) first, so that one worker runs the chain while the other takes the other
modules, and takes more of them only once the chain is done."""


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: (item.path.name != "test_pipeline.py", "whole_run" not in item.fixturenames))

"""The order of the tests, for `make test`'s `pytest -n 2 --dist loadfile --no-loadscope-reorder` (each
module on one worker, in this order): the pipeline's module first and in it the chain (01-04 through
papermill, the longest test) first, so that one worker runs the chain while the other takes the other
modules, and takes more of them only once the chain is done. And `cli`: the command line in the test's
process."""

import pytest

from symbolic_l2o.cli import main


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: (item.path.name != "test_pipeline.py", "whole_run" not in item.fixturenames))


@pytest.fixture
def cli(capsys):
    """`cli(*argv)`: the command line's `main(argv)` in this process (no interpreter to start: 3.5 s each)
    → (exit status, stdout, stderr). tests/test_cli.py runs the installed console script itself."""

    def run(*argv):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run

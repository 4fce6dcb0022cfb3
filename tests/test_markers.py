"""The marker check of :mod:`tests.markers` fails collection for a test that needs root or
Docker without saying so, and passes one that carries its marker."""

from __future__ import annotations

import pytest

# The signs are spelled in two halves here, so this test's own source shows none of them.
EUID, NETNS, DOCKER = "os.get" + "euid() != 0", "skip_unless" + "_netns", "_docker" + "_problem"
CONFTEST = "from tests.markers import pytest_collection_modifyitems\n"
MARKERS = """
[pytest]
markers =
    root: needs root
    docker: needs Docker
asyncio_default_fixture_loop_scope = function
"""


@pytest.mark.parametrize(
    ("test", "missing"),
    [
        (
            f"import os, pytest\n@pytest.mark.skipif({EUID}, reason='x')\ndef test_a(): pass\n",
            "root",
        ),
        (
            "import pytest\n"
            "@pytest.fixture\n"
            "def lab():\n"
            f"    from tests.lab.lab_helpers import {NETNS}\n"
            f"    {NETNS}()\n"
            "def test_b(lab): pass\n",
            "root",
        ),
        (
            "import pytest\n"
            "pytestmark = pytest.mark.skipif(False, reason='binds port 53 (needs ro' 'ot)')\n"
            "def test_c(): pass\n",
            "root",
        ),
        (
            f"def {DOCKER}(): return None\ndef test_d():\n    assert {DOCKER}() is None\n",
            "docker",
        ),
    ],
    ids=["skipif-geteuid", "fixture-netns", "module-skip-reason", "docker"],
)
def test_a_test_needing_root_or_docker_without_the_marker_fails_collection(
    pytester: pytest.Pytester, test: str, missing: str
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(MARKERS)
    pytester.makepyfile(test_needs=test)
    result = pytester.runpytest_inprocess("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_needs.py::test_*: needs the '{missing}' marker*"])
    marked = (
        f"import pytest\n{test}\n_earlier = globals().get('pytestmark')\n"
        f"pytestmark = ([_earlier] if _earlier else []) + [pytest.mark.{missing}]\n"
    )
    pytester.makepyfile(test_needs=marked)
    assert pytester.runpytest_inprocess("--collect-only", "-q").ret == pytest.ExitCode.OK

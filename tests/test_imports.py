"""Importing graspcheck changes nothing global and loads nothing heavy."""

import subprocess
import sys


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_graspcheck_loads_no_torch_and_names_resolve_to_the_functions():
    out = _run("import sys, graspcheck; print('torch' in sys.modules, callable(graspcheck.train), callable(graspcheck.evaluate), callable(graspcheck.extract))")
    assert out == "False True True True"


def test_training_code_leaves_matplotlib_backend_and_root_logger_alone():
    out = _run("import logging, matplotlib; matplotlib.use('svg'); level = logging.getLogger().level; "
               "import graspcheck.training, graspcheck.report, graspcheck.export; "
               "print(matplotlib.get_backend(), logging.getLogger().level == level)")
    assert out == "svg True"

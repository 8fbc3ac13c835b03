import pkgutil
import subprocess
import sys

import rl_system


def test_importing_every_core_module_never_imports_ray():
    modules = [m.name for m in pkgutil.walk_packages(rl_system.__path__, "rl_system.") if m.name != "rl_system.__main__"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "assert 'ray' not in sys.modules, 'rl_system imported ray'\n"
            "print(len(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(modules) > 10

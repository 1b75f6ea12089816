"""pybridge._embed: torch imported with RTLD_DEEPBIND when Python runs inside R."""

import subprocess
import sys


def test_preload_torch_binds_once_then_reports_already_imported():
    code = ("import sys; from pybridge._embed import preload_torch as p; a = p(); "
            "import torch; x = torch.ones(64, 64); assert float((x @ x)[0, 0]) == 64.0; "
            "print(a, p(), sys.getdlopenflags())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    import os

    assert out[:2] == ["deepbind", "already-imported"]
    assert not int(out[2]) & os.RTLD_DEEPBIND  # the interpreter's flags are restored

"""benchmarks/bench_gpu.py runs in its CPU mode (--device cpu --small), so the GPU benchmark cannot rot
before a machine with a GPU runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_gpu_small_cpu_run_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--small",
                        "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["small"] is True
    assert res["hardware"]["cpu_cores"] >= 1 and res["versions"]["torch"] and res["versions"]["scvi"]
    s = res["sections"]
    for name in ("preprocessing", "scvi", "cell2location", "insilico"):
        assert "error" not in s[name], f"{name}: {s[name].get('error')}\n{s[name].get('traceback')}"
    pp = s["preprocessing"]
    assert pp["cells"] == 4000 and pp["pybridge_cpu_s"] > 0 and pp["scanpy_cpu_s"] > 0
    assert pp["pybridge_cuda_s"] is None and pp["gpu_note"]  # no GPU asked for: recorded as such
    assert pp["ratio_scanpy_over_pybridge_cpu"] > 0
    sv = s["scvi"]["runs"]["cpu"]
    assert sv["s_per_epoch"] > 0 and sv["batch_size"] == 128 and sv["data_loading"] == "anndata"
    c2l = s["cell2location"]
    assert set(c2l["runs"]) == {"pybridge_cpu", "cell2location_cpu"}
    assert all(r["ms_per_epoch"] > 0 and r["sampling_s"] > 0 for r in c2l["runs"].values())
    assert c2l["ratio_package_over_pybridge_cpu"] > 0
    ins = s["insilico"]
    assert ins["rows"] >= len(ins["genes"]) and ins["deletions_per_s"] > 0
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "traceback"} for k, v in s.items()}, indent=1,
                     default=str))

"""Command line: ``pybridge convert IN OUT`` (h5ad <-> Seurat rds) for pipelines and batch jobs.

Examples::

    pybridge convert sample.rds sample.h5ad                 # Seurat -> AnnData (X = counts)
    pybridge convert sample.rds sample.h5ad --layer data    # X = the log-normalised layer
    pybridge convert sample.h5ad sample.rds --assay RNA --overwrite

Also runnable as ``python -m pybridge.cli``. Exit status 0 on success, 1 on a conversion error
(message on stderr), 2 on bad arguments, 130 on Ctrl-C (SIGINT; 143 on SIGTERM, 129 on SIGHUP).

The conversion runs in a child process (the embedded R and its C code do not stop on Ctrl-C): on
SIGINT, SIGTERM or SIGHUP the command stops the child, removes its temporary file and exits with
128 + the signal number, the target untouched (an existing one keeps its bytes, a new one does
not appear).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_PARENT_ENV = "PYBRIDGE_CONVERT_PARENT"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pybridge", description="pybridge: Seurat <-> AnnData files and tools.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    c = sub.add_parser(
        "convert",
        help="convert between .h5ad (AnnData) and .rds (Seurat), by file extension",
        description=(
            "Convert between AnnData .h5ad and Seurat .rds files (direction from the extensions), with the "
            "pybridge R package's WriteH5AD()/ReadH5AD() through an embedded R (rpy2). Mapping: layers, "
            "meta.data (factors, NA), reductions, graphs and Misc are carried; what cannot be is listed. "
            "The output is written to a temporary file beside OUT, then renamed."
        ),
    )
    c.add_argument("input", metavar="IN", help="input file (.rds or .h5ad)")
    c.add_argument("output", metavar="OUT", help="output file (.h5ad or .rds)")
    c.add_argument("--assay", default=None, help="Seurat assay to write (rds -> h5ad) or to create (h5ad -> rds)")
    c.add_argument("--layer", default=None,
                   help="rds -> h5ad: Seurat layer that becomes X (counts, data, scale.data; default counts). "
                        "h5ad -> rds: Seurat layer that receives X (counts or data; default automatic)")
    c.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    c.add_argument("-q", "--quiet", action="store_true", help="do not print conversion notes")
    c.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # the child's side
    return p


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise _Stopped(signum)


def _die_with_parent() -> None:
    """In the conversion child: get SIGKILL when the parent command dies (Linux), so a killed
    ``pybridge convert`` never leaves a conversion running that would replace the target later."""
    parent = os.environ.get(_PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent still stops the child on a signal
        return
    if os.getppid() != int(parent):  # the parent died before prctl
        os._exit(1)


def _stat(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _convert_in_child(args) -> int:
    """Run the conversion in a child process (this command with ``--in-process``, in its own
    session so that the terminal's Ctrl-C reaches only this process) and wait for it. On
    SIGINT/SIGTERM/SIGHUP: stop the child (SIGTERM, SIGKILL after 5 s), remove the temporary
    files it left beside the target and R's session directory, exit 128 + signal number."""
    import shutil
    import subprocess
    import tempfile

    dst = Path(os.path.expanduser(args.output)).absolute()
    before = _stat(dst)
    cmd = [sys.executable, "-m", "pybridge.cli", "convert", args.input, args.output, "--in-process"]
    for opt in ("assay", "layer"):
        if getattr(args, opt) is not None:
            cmd += [f"--{opt}", getattr(args, opt)]
    cmd += ["--overwrite"] * args.overwrite + ["--quiet"] * args.quiet
    tmpdir = tempfile.mkdtemp(prefix="pybridge-convert-")  # the child's TMPDIR (R's session directory)
    here = str(Path(__file__).resolve().parent.parent)  # the pybridge this command runs
    env = dict(os.environ, TMPDIR=tmpdir, **{_PARENT_ENV: str(os.getpid())})
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    stops = [getattr(signal, s) for s in _STOP_SIGNALS if hasattr(signal, s)]
    old = {s: signal.signal(s, _raise_stopped) for s in stops}
    proc = None
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # a signal now is handled once proc is known
        try:
            proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                    preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, stops))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        rc = proc.wait()
        if rc < 0:  # the child was killed from outside (e.g. the kernel's out-of-memory killer)
            from pybridge.io._atomic import clean_stale_tmp

            clean_stale_tmp(dst.parent)
            now = _stat(dst)
            state = "not written" if now is None else ("untouched" if now == before else "replaced")
            print(f"pybridge {args.command}: the conversion process was killed ({signal.Signals(-rc).name}); "
                  f"{dst} {state}", file=sys.stderr)
            return 128 - rc
        return rc
    except _Stopped as e:
        for s in stops:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C does not interrupt the clean-up
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        from pybridge.io._atomic import clean_stale_tmp

        clean_stale_tmp(dst.parent)  # the child's temporary file (its process is gone)
        name = signal.Signals(e.signum).name
        if proc is not None and (proc.returncode == 0 or _stat(dst) != before):
            state = f"{dst} was already written"
        elif before is None:
            state = f"{dst} not written"
        else:
            state = f"{dst} untouched"
        print(f"pybridge {args.command}: interrupted ({name}); {state}", file=sys.stderr)
        return 128 + e.signum
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(tmpdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pybridge`` command (returns the exit status)."""
    args = _parser().parse_args(argv)
    if args.command == "convert" and not args.in_process and os.name == "posix":  # (no process groups elsewhere)
        return _convert_in_child(args)
    _die_with_parent()
    from pybridge._core import settings  # the "pybridge" logger prints the notes on stderr

    try:
        with settings.override("warning" if args.quiet else "info"):
            if args.command == "convert":
                from pybridge.io._seurat_rds import convert_file

                out = convert_file(args.input, args.output, assay=args.assay, layer=args.layer,
                                   overwrite=args.overwrite)
                if not args.quiet:
                    print(f"wrote {out}", file=sys.stderr)
        return 0
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        print(f"pybridge {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m pybridge.cli
    sys.exit(main())

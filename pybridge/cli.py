"""Command line: ``pybridge convert IN OUT`` (h5ad <-> Seurat rds) for pipelines and batch jobs.

Examples::

    pybridge convert sample.rds sample.h5ad                 # Seurat -> AnnData (X = counts)
    pybridge convert sample.rds sample.h5ad --layer data    # X = the log-normalised layer
    pybridge convert sample.h5ad sample.rds --assay RNA --overwrite

Also runnable as ``python -m pybridge.cli``. Exit status 0 on success, 1 on a conversion error
(message on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys


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
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pybridge`` command (returns the exit status)."""
    args = _parser().parse_args(argv)
    log = logging.getLogger("pybridge")
    handler = None
    if not args.quiet and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pybridge: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        if args.command == "convert":
            from pybridge.io._seurat_rds import convert_file

            out = convert_file(args.input, args.output, assay=args.assay, layer=args.layer, overwrite=args.overwrite)
            if not args.quiet:
                print(f"wrote {out}", file=sys.stderr)
        return 0
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        print(f"pybridge {args.command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if handler is not None:
            log.removeHandler(handler)


if __name__ == "__main__":  # python -m pybridge.cli
    sys.exit(main())

"""Console entry point `hf-sparse-tempscale`; each feature area registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib

# Feature modules exposing `register(subparsers)`; a module that is not installed is skipped.
_REGISTRARS = (
    "hf_sparse_tempscale.evaluation.cli",
    "hf_sparse_tempscale.training.cli",
    "hf_sparse_tempscale.scb.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-sparse-tempscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _REGISTRARS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

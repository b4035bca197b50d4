"""``python -m gpudl.examples NAME``: run one of the example scripts (``--list`` to see them)."""

import argparse
import importlib
import pkgutil
import sys

import gpudl.examples as package


def available():
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpudl.examples", add_help=False)
    parser.add_argument("name", nargs="?", help="example to run: " + ", ".join(available()))
    parser.add_argument("--list", action="store_true", help="list the examples")
    args, rest = parser.parse_known_args(argv)
    if not args.name and ("-h" in rest or "--help" in rest):
        parser.print_help()
        return 0
    if args.list or not args.name:
        for name in available():
            doc = (importlib.import_module(f"gpudl.examples.{name}").__doc__ or "").strip()
            print(f"{name:14s} {doc.splitlines()[0] if doc else ''}")
        return 0
    if args.name not in available():
        parser.error(f"unknown example {args.name!r}; choose from {', '.join(available())}")
    return importlib.import_module(f"gpudl.examples.{args.name}").main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m genlab.tuning CONFIG [key=value ...] [--study-dir DIR] [--workers N]`: the same as
`genlab tune` (handy before the CLI is wired, and for tests that kill a study process)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genlab.errors import GenlabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genlab.tuning")
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--study-dir")
    parser.add_argument("--workers", type=int, default=1)
    args, extra = parser.parse_known_args(argv)
    from genlab.tuning import print_summary, run_study

    try:
        result = run_study(
            Path(args.config),
            [*args.overrides, *extra],
            Path(args.study_dir) if args.study_dir else None,
            args.workers,
        )
    except GenlabError as exc:
        print(f"genlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

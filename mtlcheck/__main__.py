"""`python -m mtlcheck`: the `mtlcheck` command. `--version` answers here; everything else goes to
the study's command (`mtlcheck.study.cli`), whose `check` (the conformance kit) needs the library
alone. The one module of the library that reaches into the study, and only when run."""

import sys

from mtlcheck import __version__

STUDY_MISSING = 'mtlcheck: error: the mtlcheck command comes with the study: pip install "mtlcheck[study]"'


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print(f"mtlcheck {__version__}")
        return 0
    try:
        from mtlcheck.study.cli import console_main
    except ModuleNotFoundError as exc:
        if not (exc.name == "mtlcheck.study" or (exc.name or "").startswith("mtlcheck.study.")):
            raise
        print(STUDY_MISSING, file=sys.stderr)
        return 2
    return console_main()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    exec("")  # the flag of a handled Ctrl-C reset before exit, as in mtlcheck/study/__main__.py
    sys.exit(code)

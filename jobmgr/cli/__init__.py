"""Command-line entry points: jobmgr-server, jobmgr-client and jobmgr-certs."""

import argparse
import os
import sys
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default in --help, except empty ones (off switches, no value).

    Descriptions and epilogs are wrapped line by line, so an epilog's examples keep their
    lines, while a long one-line description still fits the terminal.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        # argparse builds a formatter for every add_argument, and finds the width through
        # shutil, whose import (bz2, lzma) is a few ms of every short command's start.
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith(" ") or len(line) <= width:
                lines.append(indent + line)
            else:
                lines.append(
                    textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(lines)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # A default such as cpu=1,memory=512M,... is one word, kept whole so it can be copied.
        return textwrap.wrap(
            " ".join(text.split()), width, break_long_words=False, break_on_hyphens=False
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def _terminal_columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it: $COLUMNS, else stdout's
    terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    try:
        return (stdout and os.get_terminal_size(stdout.fileno()).columns) or 80
    except (ValueError, OSError):
        return 80


class _Version(argparse.Action):
    """``--version``: prints the installed jobmgr's version and exits 0. Read from the
    package's metadata only when asked, so that no other run pays for importlib.metadata."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("jobmgr")
        except PackageNotFoundError:
            found = "(not installed: run from a source tree)"
        print(f"{parser.prog} {found}")
        parser.exit()


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """Give a program's parser ``--version``."""
    parser.add_argument("--version", action=_Version)

"""Command-line entry points: jobmgr-server, jobmgr-client and jobmgr-certs."""

import argparse
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default in --help, except empty ones (off switches, no value).

    Descriptions and epilogs are wrapped line by line, so an epilog's examples keep their
    lines, while a long one-line description still fits the terminal.
    """

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

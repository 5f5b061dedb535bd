"""jobmgr-server's settings table: every row reads back what it writes, through the file, the
flags and --print-config; unknown keys are refused; --help and the docs list every row."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from jobmgr.cli._config import ConfigError, ServerConfig, from_document, load, render
from jobmgr.cli._setting import Setting
from jobmgr.cli._settings import SETTINGS
from jobmgr.cli.server import build_parser, effective_config
from jobmgr.worker import Limits, Retention

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ServerConfig()
MiB = 1024 * 1024
# The file only: which calls each role may make is too much for a flag.
FILE_ONLY = {"roles"}
# Tables whose keys are the operator's own names (roles), not settings.
OPEN_TABLES = {"access.roles"}

# A configuration unlike the defaults in every field, with strings TOML must escape.
OTHER = ServerConfig(
    host="::1",
    port=4000,
    ca="/etc/jobmgr/ca.pem",
    cert="/etc/jobmgr/server.pem",
    key="/etc/jobmgr/server.key",
    crl="/etc/jobmgr/crl.pem",
    log_format="json",
    state_dir='/srv/jöbs "quoted"\\dir',
    cgroup_parent="jobmgr/nested",
    grace=90.0,
    max_running=50,
    output_cap=100 * MiB,
    run_as="build",
    allowed_run_as=("nobody", "build"),
    retention=Retention(count=1000, max_age=30 * 86400.0),
    default_limits=Limits(
        cpu=0.5,
        memory_bytes=256 * MiB,
        io_read_bps=1536 * 1024,
        io_write_bps=0,
        pids=100,
        disk_bytes=128 * MiB,
    ),
    max_limits=Limits(cpu=2.0, memory_bytes=4096 * MiB, pids=4096, disk_bytes=1024 * MiB),
    uid_range=(1000000000, 1000065535),
    hidden_paths=("/root", '/srv/sécret "dir"'),
    visible_paths=("/home",),
    mount_sources=("/srv/data", "/srv/cache:rw"),
    rootfs_dirs=("/srv/roots",),
    user_namespaces="allow",
    user_sees="own",
    roles={"admin": ("Start", "Stop"), "user": ("List",), "night shift": ("Status", "List")},
    max_connections=500,
    connections_per_peer=20,
    handshake_timeout=10.0,
    idle_timeout=60.0,
    streams_per_connection=50,
    streams_per_caller=16,
    rpcs_in_flight=300,
)


def read_back(text: str) -> ServerConfig:
    """The configuration a TOML text makes over the defaults."""
    return DEFAULTS.with_changes(from_document(tomllib.loads(text)))


def place(row: Setting) -> str:
    """The row's table in the file: ``[jobs] grace`` sits in [jobs], a Record in its own."""
    rendered = row.render(getattr(OTHER, row.field))
    return f"{row.section}.{row.key}" if isinstance(rendered, dict) else row.section


def in_file(row: Setting, value: Any) -> Any:
    """What the TOML file --print-config writes holds for ``row`` set to ``value``."""
    document = tomllib.loads(render(dataclasses.replace(DEFAULTS, **{row.field: value})))
    return document[row.section].get(row.key)


@pytest.mark.parametrize("row", SETTINGS, ids=lambda row: f"{row.section}.{row.key}")
def test_each_default_reads_back_from_the_file_it_renders_to(row: Setting) -> None:
    default = getattr(DEFAULTS, row.field)
    written = in_file(row, default)
    if default is None:  # unset: the key is left out (a comment says so)
        assert written is None
        assert f"# {row.key}: unset ({row.unset})" in render(DEFAULTS)
    else:
        assert row.parse(written) == default


@pytest.mark.parametrize("row", SETTINGS, ids=lambda row: f"{row.section}.{row.key}")
def test_each_other_value_reads_back_from_the_file_it_renders_to(row: Setting) -> None:
    value = getattr(OTHER, row.field)
    assert value != getattr(DEFAULTS, row.field), f"give OTHER a value of {row.field} to test"
    assert row.parse(in_file(row, value)) == value


def test_the_whole_file_reads_back_to_the_same_configuration() -> None:
    assert read_back(render(DEFAULTS)) == DEFAULTS
    assert read_back(render(OTHER)) == OTHER


def test_every_row_has_help_and_a_flag_and_help_shows_its_default() -> None:
    text = build_parser().format_help()
    flat = " ".join(text.split())
    for row in SETTINGS:
        assert row.help, row
        assert not row.choices or all(isinstance(choice, str) for choice in row.choices)
        if row.field in FILE_ONLY:
            assert row.flag is None
            continue
        assert row.flag and row.flag.startswith("--"), row
        assert row.flag in text
        shown = row.shown(getattr(DEFAULTS, row.field))
        assert f"{' '.join(row.help.split())} (default: {shown})" in flat, row.flag


def test_fields_and_rows_match_one_to_one() -> None:
    fields = list(ServerConfig.__dataclass_fields__)
    assert sorted(row.field for row in SETTINGS) == sorted(fields)
    assert len({(row.section, row.key) for row in SETTINGS}) == len(SETTINGS)
    flags = [row.flag for row in SETTINGS if row.flag]
    assert len(set(flags)) == len(flags)


def flags_for(config: ServerConfig) -> list[str]:
    """Flags that set every flagged setting to ``config``'s value, as --help shows values."""
    argv: list[str] = []
    for row in SETTINGS:
        if row.flag is None:
            continue
        value = getattr(config, row.field)
        if value is None:
            continue
        if row.collect:
            argv += [item for each in value for item in (row.flag, each)]
        else:
            argv += [row.flag, row.shown(value)]
    return argv


def test_each_flag_takes_the_value_as_help_shows_it() -> None:
    config = effective_config(build_parser().parse_args(flags_for(OTHER)))
    for row in SETTINGS:
        if row.flag is not None:
            assert getattr(config, row.field) == getattr(OTHER, row.field), row.flag


def test_print_config_output_loads_back_to_the_same_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "jobmgr.toml"
    file_only = [row for row in SETTINGS if row.flag is None]
    config_file.write_text(
        render(DEFAULTS.with_changes({row.field: getattr(OTHER, row.field) for row in file_only}))
    )
    printed = subprocess.run(
        [sys.executable, "-m", "jobmgr.cli.server", "--config", str(config_file),
         *flags_for(OTHER), "--print-config"],
        capture_output=True, text=True, cwd="/", check=False,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert read_back(printed.stdout) == OTHER
    written = tmp_path / "printed.toml"
    written.write_text(printed.stdout)
    assert DEFAULTS.with_changes(load(written)) == OTHER


def test_a_flag_lays_over_the_file_and_repeats_merge_or_collect(tmp_path: Path) -> None:
    config_file = tmp_path / "jobmgr.toml"
    config_file.write_text(
        '[jobs]\nallowed_run_as = ["nobody", "build"]\n[jobs.retention]\ncount = 10\n'
        'max_age = "1d"\n[limits.max]\nmemory = "1G"\n[access.roles]\nuser = ["List"]\n'
    )
    args = build_parser().parse_args(
        ["--config", str(config_file), "--retain", "count=5", "--max-limit", "cpu=2",
         "--max-limit", "pids=2000", "--allow-run-as", "root", "--run-as", "root"]
    )  # fmt: skip
    config = effective_config(args)
    assert config.retention == Retention(count=5, max_age=86400.0)
    assert config.max_limits == Limits(cpu=2.0, memory_bytes=1024 * MiB, pids=2000)
    assert config.allowed_run_as == ("root",)
    assert config.roles["user"] == ("List",) and config.roles["admin"] == DEFAULTS.roles["admin"]


def tables_in(text: str) -> list[str]:
    return re.findall(r"^\[([\w.]+)\]", text, re.MULTILINE)


@pytest.mark.parametrize("table", sorted(set(tables_in(render(DEFAULTS))) - OPEN_TABLES))
def test_an_unknown_key_is_refused_by_name(table: str) -> None:
    with pytest.raises(ConfigError, match="unknown .*'colour' in \\[" + re.escape(table)):
        from_document(tomllib.loads(f"[{table}]\ncolour = 1\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits.max]\nmemroy = '1G'\n", "unknown limit 'memroy' in [limits.max] (known: cpu,"),
        ("[bogus]\nx = 1\n", "unknown section [bogus]"),
        ("[limits.other]\ncpu = 1\n", "unknown section [limits.other]"),
        ("[limits]\nfoo = 1\n", "unknown key 'foo' in [limits]"),
        ("port = 4000\n", "'port' must be inside a section, e.g. [server] or [jobs]"),
        ("[jobs]\ngrace = 'soon'\n", "[jobs] grace: 'soon' is not a duration"),
        ("[limits.default]\ncpu = 'x'\n", "[limits.default] cpu: must be a number of CPUs"),
        ("[access.roles]\nuser = 5\n", "[access.roles]: must be a list of strings, got 5"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_place(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_document(tomllib.loads(text))
    assert message in str(caught.value)


# ---- docs -------------------------------------------------------------------------------------


def keys_in(text: str) -> set[tuple[str, str]]:
    """(table, key) of every ``key = value`` in a table, and of every key commented out there
    (``# key = 100`` in the example, ``# key: unset`` in --print-config)."""
    found: set[tuple[str, str]] = set()
    table = ""
    for line in text.splitlines():
        if header := re.match(r"^\[([\w.]+)\]", line):
            table = header[1]
        elif table and (key := re.match(r'^(?:# )?([\w-]+|"[^"]+")\s*[=:]', line)):
            found.add((table, key[1].strip('"')))
    return found


def test_the_example_file_holds_every_key_and_flag_with_the_defaults() -> None:
    example = (ROOT / "docs" / "jobmgr.example.toml").read_text()
    # render() writes every key: set ones as key = value, unset ones as "# key: unset".
    in_example, in_table = keys_in(example), keys_in(render(DEFAULTS))
    missing, extra = in_table - in_example, in_example - in_table
    assert not missing and not extra, f"example lacks {missing}, has unknown {extra}"
    assert read_back(example) == DEFAULTS
    for row in SETTINGS:
        assert row.flag is None or f"({row.flag}" in example, row.flag


def test_the_usage_guide_lists_every_setting_with_its_flag_and_default() -> None:
    usage = (ROOT / "docs" / "usage.md").read_text()
    # The settings table, and the Connection limits table that says more of its own rows.
    tables = [block for block in usage.split("\n\n") if block.startswith("| setting (file)")]
    assert len(tables) == 2, "docs/usage.md has a settings table and a connection-limits one"
    table = [line for block in tables for line in block.splitlines()]
    for row in SETTINGS:
        name = f"`[{place(row)}]`" if place(row) != row.section else f"`[{row.section}] {row.key}`"
        lines = [line for line in table if line.startswith(f"| {name}")]
        assert len(lines) == 1, f"docs/usage.md needs a line for {name}"
        if row.flag is not None:
            shown = row.shown(getattr(DEFAULTS, row.field))
            assert f"`{row.flag}" in lines[0] and shown in lines[0], (lines[0], shown)

"""The command line's own options (each subcommand has its tests beside its module's)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from streamwatch.cli import main


def test_version_prints_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"streamwatch {version('streamwatch')}\n"

"""The set-up's own messages (Makefile `system-deps`), on a machine made to lack things: a
PATH with no apt-get and no sudo, and a python3 that reports a library or version missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _system_deps(tmp_path: Path, fail_when: str) -> subprocess.CompletedProcess:
    make, ident = shutil.which("make"), shutil.which("id")
    if make is None or ident is None:
        pytest.skip("needs make and id on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3"  # the real interpreter, except for the one check we fail
    shim.write_text(f'#!/bin/sh\ncase "$*" in *{fail_when}*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    os.symlink(ident, bin_dir / "id")
    return subprocess.run([make, "--no-print-directory", "-C", str(ROOT), "system-deps", f"PYTHON={shim}"],
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True,
                          timeout=60)


def test_a_missing_system_library_is_named_with_the_command_that_installs_it(tmp_path):
    result = _system_deps(tmp_path, "usb-1.0")
    assert result.returncode != 0
    assert "Holoport needs these system packages: libusb-1.0-0." in result.stdout, result.stdout
    assert "sudo apt-get install libusb-1.0-0)" in result.stdout


def test_an_old_python_is_refused_with_what_to_run_instead(tmp_path):
    result = _system_deps(tmp_path, "version_info")
    assert result.returncode != 0
    assert "needs Python 3.10 or newer" in result.stdout and "make PYTHON=" in result.stdout


def test_nothing_is_asked_for_when_nothing_is_missing(tmp_path):
    import ctypes.util

    if ctypes.util.find_library("usb-1.0") is None:
        pytest.skip("libusb-1.0 is not installed here (make test installs it as root)")
    result = _system_deps(tmp_path, "no-such-check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""

"""Shared fixtures: small synthetic releases written once per session, and a network guard."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from helpers import SMALL  # noqa: E402
from umd_dataset import open_release, synthesize  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any test that opens a connection beyond this machine."""
    original = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("/"):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return original(self, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = original


@pytest.fixture(scope="session")
def small_release_root(tmp_path_factory) -> Path:
    """A synthetic release shared by read-only tests. Do not modify it: use `release_copy`."""
    root = tmp_path_factory.mktemp("releases") / "umd-test"
    synthesize(root, SMALL)
    return root


@pytest.fixture(scope="session")
def small_release(small_release_root):
    return open_release(small_release_root)


@pytest.fixture
def release_copy(small_release_root, tmp_path) -> Path:
    """A private copy of the small release, for tests that damage it."""
    target = tmp_path / "copy"
    shutil.copytree(small_release_root, target)
    return target

"""Tests of tests/servers/*.sh: each case runs its own server instance in a
private run dir, so the suite's servers (tests/run.sh) are not touched."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest

SERVERS = Path(__file__).resolve().parents[1] / "servers"


def script(name, action, run_dir, **env):
    full = {**os.environ, "SYNCVET_RUN_DIR": str(run_dir), **env}
    return subprocess.run(["bash", str(SERVERS / name), action], capture_output=True, text=True, env=full, timeout=120)


def exports(stdout: str) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines() if line.startswith("export "))


def curl_s3(env, method, key, secret=None, data=None):
    cmd = [
        "curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", "-X", method,
        "--aws-sigv4", "aws:amz:us-east-1:s3",
        "--user", f"{env['AWS_ACCESS_KEY_ID']}:{secret or env['AWS_SECRET_ACCESS_KEY']}",
        "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        f"{env['AWS_ENDPOINT']}/{env['AWS_BUCKET']}/{key}",
    ]  # fmt: skip
    if data is not None:
        cmd += ["--data-binary", data]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return int(out.stdout), out.stderr


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize(("name", "port_var"), [("seaweedfs.sh", "SYNCVET_S3_PORT"), ("azurite.sh", "SYNCVET_AZURITE_PORT")])
def test_start_fails_and_says_why_when_the_port_is_taken(tmp_path, name, port_var):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = script(name, "start", tmp_path, **{port_var: str(port)})
    assert result.returncode != 0
    assert f"already in use on 127.0.0.1: {port}" in result.stderr
    assert "cannot start" in result.stderr and result.stdout == ""
    assert not any(tmp_path.glob("*/pid"))


def test_seaweedfs_checks_credentials_and_restart_keeps_port_and_data(tmp_path):
    started = script("seaweedfs.sh", "start", tmp_path)
    assert started.returncode == 0, started.stderr
    env = exports(started.stdout)
    pid = int((tmp_path / "seaweedfs/pid").read_text())
    try:
        assert curl_s3(env, "PUT", "e2e/kept.txt", data="kept")[0] == 200
        assert curl_s3(env, "GET", "e2e/kept.txt", secret="wrong-secret")[0] == 403
        restarted = script("seaweedfs.sh", "restart", tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        assert not alive(pid)
        assert exports(script("seaweedfs.sh", "env", tmp_path).stdout) == env
        assert curl_s3(env, "GET", "e2e/kept.txt") == (200, "kept")
    finally:
        new_pid = int((tmp_path / "seaweedfs/pid").read_text())
        assert script("seaweedfs.sh", "stop", tmp_path).returncode == 0
    assert not alive(new_pid)
    assert script("seaweedfs.sh", "status", tmp_path).returncode != 0


def test_azurite_creates_the_container_and_stops_by_pid(tmp_path):
    started = script("azurite.sh", "start", tmp_path)
    assert started.returncode == 0, started.stderr
    env = exports(started.stdout)
    pid = int((tmp_path / "azurite/pid").read_text())
    try:
        authority = env["AZURITE_BLOB_STORAGE_URL"].removeprefix("http://")
        fs = pafs.AzureFileSystem(
            account_name=env["AZURE_STORAGE_ACCOUNT_NAME"],
            account_key=env["AZURE_STORAGE_ACCOUNT_KEY"],
            blob_storage_authority=authority,
            dfs_storage_authority=authority,
            blob_storage_scheme="http",
            dfs_storage_scheme="http",
        )
        path = f"{env['AZURE_CONTAINER_NAME']}/e2e/probe.txt"
        with fs.open_output_stream(path) as f:
            f.write(b"hello")
        with fs.open_input_stream(path) as f:
            assert f.read() == b"hello"
        # A second start is a no-op on the running server, and the container
        # step accepts "already exists".
        again = script("azurite.sh", "start", tmp_path)
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        assert script("azurite.sh", "stop", tmp_path).returncode == 0
    assert not alive(pid)

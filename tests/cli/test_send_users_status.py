"""`pushd send`, `pushd users` and `pushd status` against a running server: in process
against the app on a real socket (tests/app_client.py), and once as real processes
against a real `pushd serve`, for the exit codes and the environment defaults."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.cli.main import _parser
from tests.api.test_broadcast import finished
from tests.app_client import ADMIN_KEY, AUTH, MakeClient, create_key
from tests.process.server_process import ServerProcess

Client = TestClient[Any, Any]


async def cli(*argv: str) -> tuple[int, list[str]]:
    """Run a standalone `pushd` command in this loop: its exit code and printed lines."""
    args = _parser().parse_args(argv)
    printed: list[str] = []
    code: int = await args.standalone(args, printed.append)
    return code, printed


def server_of(client: Client, key: str = ADMIN_KEY) -> list[str]:
    return ["--url", str(client.make_url("")), "--key", key]


async def test_users_create_list_show(client: Client) -> None:
    server = server_of(client)
    code, printed = await cli(
        "users", "create", *server, "--external-id", "ada", "--name", "Ada",
        "--email", "ada@example.com", "--timezone", "Europe/Paris", "--tag", "beta",
    )  # fmt: skip
    assert code == 0, printed
    created = json.loads(printed[0])
    assert (created["external_id"], created["tags"]) == ("ada", ["beta"])
    for index in range(3):
        assert (await cli("users", "create", *server, "--external-id", f"u{index}"))[0] == 0

    code, printed = await cli("users", "list", *server)
    assert code == 0
    assert [json.loads(line)["external_id"] for line in printed] == ["ada", "u0", "u1", "u2"]
    code, printed = await cli("users", "list", *server, "--limit", "2")
    assert [json.loads(line)["external_id"] for line in printed] == ["ada", "u0"]

    code, printed = await cli("users", "show", *server, created["id"])
    assert code == 0
    assert json.loads("\n".join(printed))["email"] == "ada@example.com"


async def test_users_refusals_exit_2_and_name_the_field(client: Client) -> None:
    server = server_of(client)
    code, printed = await cli("users", "show", *server, "usr_nobody")
    assert code == 2
    assert "no user" in printed[0]
    code, printed = await cli("users", "create", *server, "--timezone", "Mars/Olympus")
    assert code == 2
    assert "(field timezone)" in printed[0]
    code, printed = await cli("users", "list", *server_of(client, "pk_not_a_key"))
    assert (code, "HTTP 401" in printed[0]) == (2, True)


async def test_send_to_a_user_with_data_category_priority(client: Client) -> None:
    server = server_of(client)
    publisher, _ = await create_key(client, "publisher")
    _, printed = await cli("users", "create", *server, "--external-id", "grace")
    user = json.loads("\n".join(printed))
    code, printed = await cli(
        "send", *server_of(client, publisher), "--external-id", "grace", "--title", "Build",
        "--body", "main is red", "--data", '{"build": 42}', "--category", "builds",
        "--priority", "high",
    )  # fmt: skip
    assert code == 0, printed
    accepted = json.loads("\n".join(printed))
    assert (accepted["user_id"], accepted["seq"]) == (user["id"], 1)
    response = await client.get(f"/api/notifications/{accepted['id']}", headers=AUTH)
    stored = await response.json()
    assert (stored["data"], stored["category"], stored["priority"]) == (
        {"build": 42},
        "builds",
        "high",
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data", "[1]"], "--data must be a JSON object"),
        (["--data", "{nope"], "--data is not valid JSON"),
        (["--title", "x", "--data", "{}", "--category", "Not A Slug"], "field category"),
        ([], "give --title, --body or both"),
    ],
)
async def test_send_bad_input_exits_2(client: Client, flags: list[str], message: str) -> None:
    title = [] if "--title" in flags or not flags else ["--title", "t"]
    code, printed = await cli("send", *server_of(client), "--user", "usr_x", *title, *flags)
    assert code == 2
    assert message in printed[0]


async def test_status_prints_health_and_figures(client: Client) -> None:
    code, printed = await cli("status", *server_of(client))
    assert code == 0
    assert "status: ok" in printed[0]
    assert any(line.strip().startswith("notifications accepted:") for line in printed)
    code, printed = await cli("status", "--url", str(client.make_url("")))  # no key
    assert code == 0
    assert not any("notifications accepted" in line for line in printed)


async def test_unreachable_server_exits_1(make_client: MakeClient) -> None:
    client = await make_client()
    url = str(client.make_url(""))
    await client.close()  # nothing listens there any more
    for argv in (
        ["status", "--url", url],
        ["users", "list", "--url", url, "--key", ADMIN_KEY],
        ["send", "--url", url, "--key", ADMIN_KEY, "--user", "usr_x", "--title", "t"],
    ):
        code, printed = await cli(*argv)
        assert code == 1, (argv, printed)
        assert "cannot reach" in printed[0]


def test_missing_key_and_bad_usage_exit_2() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
    for argv in (["users", "list"], ["send", "--user", "u", "--title", "t"], ["send"]):
        result = subprocess.run(
            [sys.executable, "-m", "pushd", *argv],
            capture_output=True, text=True, timeout=60, check=False, env=environment,
        )  # fmt: skip
        assert result.returncode == 2, (argv, result.stdout, result.stderr)


@pytest.mark.slow
async def test_real_processes_with_the_key_from_the_environment(tmp_path: Path) -> None:
    """A real `pushd serve`, and the CLI as scripts run it: URL and key from PUSHD_URL
    and PUSHD_API_KEY, never on the command line; exit codes as documented."""
    server = await ServerProcess.start(tmp_path, env={"PUSHD_ADMIN_KEY": ADMIN_KEY})
    async with server:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
        environment |= {"PUSHD_URL": server.url, "PUSHD_API_KEY": ADMIN_KEY}

        async def pushd(*argv: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pushd", *argv, env=environment,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await process.communicate()
            return await process.wait(), output.decode()

        code, output = await pushd("users", "create", "--external-id", "linus")
        assert code == 0, output
        code, output = await pushd("send", "--external-id", "linus", "--title", "hi")
        assert code == 0, output
        assert json.loads(output)["seq"] == 1
        code, output = await pushd("send", "--external-id", "nobody", "--title", "hi")
        assert code == 2, output
        code, output = await pushd("status")
        assert code == 0, output
        assert "notifications accepted: 1" in output
        assert await server.stop() == 0
    code, output = await pushd("status")
    assert code == 1, output


@pytest.mark.parametrize(
    "command",
    [["send"], ["users", "create"], ["users", "list"], ["users", "show"], ["status"],
     ["check-config"], ["seed"]],
)  # fmt: skip
def test_every_command_has_help_naming_its_exit_codes(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    assert "exit codes: 0 " in capsys.readouterr().out


async def test_send_to_a_topic_reaches_its_subscribers(client: Client) -> None:
    server = server_of(client)
    created = await client.post("/api/topics", json={"slug": "news", "name": "News"}, headers=AUTH)
    assert created.status == 201, await created.text()
    for external_id in ("a", "b"):
        _, printed = await cli("users", "create", *server, "--external-id", external_id)
        user_id = json.loads("\n".join(printed))["id"]
        put = await client.put(f"/api/topics/news/subscribers/{user_id}", headers=AUTH)
        assert put.status in (200, 201, 204), await put.text()
    code, printed = await cli("send", *server, "--topic", "news", "--title", "v2 is out")
    assert code == 0, printed
    accepted = json.loads("\n".join(printed))
    # A topic send is a job (docs/audiences.md): the 202 names it, its progress counts.
    shown = await finished(client, accepted["send_id"])
    assert shown["recipients"]["committed"] == 2

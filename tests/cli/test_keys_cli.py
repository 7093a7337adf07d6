"""``switchboard keys`` and ``switchboard erase`` against a real gateway with virtual keys: the CLI run
in-process as a user would type it, the keys it prints used with the official OpenAI SDK."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from switchboard.app import create_app
from switchboard.cli.main import main
from switchboard.config.load import parse_config
from switchboard.sim.fleet import DEFAULT_FLEET, gateway_config_for_fleet
from tests.e2e.servers import GatewayThread, SimThread

pytestmark = pytest.mark.e2e

ADMIN = "adm-keys-cli-test-key-0001"
SECRET = "k" * 40
SMALL = "sim-gpt-small"
USER = [{"role": "user", "content": "Tell me something."}]
KEY_RE = re.compile(r"^sk-sb-\S+$", re.MULTILINE)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    tmp = tmp_path_factory.mktemp("keys-cli")
    sim = SimThread(DEFAULT_FLEET)
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["records"] = {"path": str(tmp / "records.db"), "flush_interval": 0.05}
    raw["resilience"] = {"retries": {"attempts": 1}}
    raw["admin"] = {"key": "env:ADMIN"}
    raw["auth"] = {"virtual_keys": True, "secret": "env:SECRET", "path": str(tmp / "keys.db")}
    g = GatewayThread(create_app(parse_config(raw, env={"ADMIN": ADMIN, "SECRET": SECRET})))
    yield g
    g.close()
    sim.close()


@pytest.fixture(autouse=True)
def admin_env(gw: GatewayThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_URL", gw.url)
    monkeypatch.setenv("SWITCHBOARD_ADMIN_KEY", ADMIN)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``switchboard *argv``: (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    status, out, err = cli(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def create(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[str, str]:
    """A new key made with ``keys create``: (plaintext, id), read from what a person sees."""
    status, out, err = cli(capsys, "keys", "create", *flags)
    assert status == 0, err
    assert "will not be shown again" in out
    keys = KEY_RE.findall(out)
    assert len(keys) == 1, out
    key_id = re.search(r"Created key (\S+?)[ ,]", out)
    assert key_id is not None, out
    return keys[0], key_id.group(1)


def chat(gw: GatewayThread, key: str) -> None:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30) as client:
        client.chat.completions.create(model=SMALL, messages=USER)


# -- the key's life ------------------------------------------------------------------------------------


def test_created_key_works_and_is_listed_without_its_secret(gw: GatewayThread,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    key, key_id = create(capsys, "--name", "ci", "--team", "search", "--user", "ada", "--models", SMALL,
                         "--rpm", "60", "--budget-day", "5", "--tag", "nightly", "--meta", "owner=ada",
                         "--expires-in", "3600")
    chat(gw, key)

    status, out, _ = cli(capsys, "keys", "list", "--team", "search")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "TEAM", "USER", "ROLE", "LIMITS", "STATUS"]
    row = next(r for r in rows if r.startswith(key_id))
    assert "ci" in row and "ada" in row and "rpm 60, $5/day" in row and row.endswith("active")
    assert key.split("_", 1)[1] not in out

    listed = cli_json(capsys, "keys", "list", "--user", "ada")["data"]
    assert [k["id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and key.split("_", 1)[1] not in json.dumps(listed)

    shown = cli_json(capsys, "keys", "show", key_id)
    assert shown["metadata"] == {"owner": "ada"} and shown["tags"] == ["nightly"]
    assert shown["spend"]["in_flight"] == 0
    status, out, _ = cli(capsys, "keys", "show", key_id)
    assert status == 0 and re.search(r"^rpm\s+60$", out, re.MULTILINE) and "spend" in out


def test_update_sets_and_clears_fields(gw: GatewayThread, capsys: pytest.CaptureFixture[str]) -> None:
    key, key_id = create(capsys, "--rpm", "60", "--budget-day", "5", "--models", SMALL, "--tag", "a")
    updated = cli_json(capsys, "keys", "update", key_id, "--rpm", "120", "--name", "renamed",
                       "--clear", "budget_day", "--clear", "models")
    assert updated["rpm"] == 120 and updated["name"] == "renamed"
    assert updated["budget_day"] is None and updated["models"] == [] and updated["tags"] == ["a"]
    assert cli_json(capsys, "keys", "show", key_id)["rpm"] == 120
    chat(gw, key)


def test_rotate_and_revoke_take_effect_at_once(gw: GatewayThread, capsys: pytest.CaptureFixture[str]) -> None:
    old, key_id = create(capsys, "--name", "rotating")
    chat(gw, old)

    status, out, _ = cli(capsys, "keys", "rotate", key_id)
    assert status == 0 and "will not be shown again" in out
    (new,) = KEY_RE.findall(out)
    assert new != old
    with pytest.raises(openai.AuthenticationError):
        chat(gw, old)
    chat(gw, new)

    status, out, _ = cli(capsys, "keys", "revoke", key_id)
    assert status == 0 and key_id in out
    with pytest.raises(openai.AuthenticationError) as err:
        chat(gw, new)
    assert err.value.status_code == 401
    _, out, _ = cli(capsys, "keys", "list")
    assert next(r for r in out.splitlines() if r.startswith(key_id)).endswith("revoked")


def test_audit_shows_each_action(gw: GatewayThread, capsys: pytest.CaptureFixture[str]) -> None:
    _, key_id = create(capsys, "--name", "audited")
    for argv in (("update", key_id, "--rpm", "5"), ("rotate", key_id), ("revoke", key_id)):
        assert cli(capsys, "keys", *argv)[0] == 0
    entries = cli_json(capsys, "keys", "audit", "--limit", "1000")["data"]
    mine = [(e["action"], e["outcome"]) for e in entries if e["target"] == f"key:{key_id}"]
    assert sorted(mine) == [("key.revoke", "ok"), ("key.rotate", "ok"), ("key.update", "ok")]
    assert any(e["action"] == "key.create" for e in entries)

    status, out, _ = cli(capsys, "keys", "audit", "--limit", "3")
    header, *rows = out.splitlines()
    assert status == 0 and header.startswith("TIME") and len(rows) == 3
    assert rows[0].split()[2:5] == ["admin", "key.revoke", f"key:{key_id}"]


def test_erase_prints_a_receipt(gw: GatewayThread, capsys: pytest.CaptureFixture[str]) -> None:
    key, key_id = create(capsys, "--user", "erin")
    chat(gw, key)
    status, out, _ = cli(capsys, "erase", "--user", "erin")
    assert status == 0
    receipt = json.loads(out)
    assert receipt["object"] == "erasure.receipt" and "erin" not in out
    assert receipt["erased"]["keys"] == 1 and receipt["erased"]["key_ids"] == [key_id]
    with pytest.raises(openai.AuthenticationError):
        chat(gw, key)

    _, other_id = create(capsys)
    receipt = cli_json(capsys, "erase", "--key-id", other_id)
    assert receipt["erased"]["key_ids"] == [other_id]


# -- what goes wrong ------------------------------------------------------------------------------------


def test_a_refused_field_prints_the_api_message(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(capsys, "keys", "create", "--rpm", "0")
    assert status == 1 and out == ""
    assert "HTTP 400" in err and "'rpm' must be an integer from 1" in err

    status, _, err = cli(capsys, "keys", "create", "--models", "no-such-model")
    assert status == 1 and "unknown model" in err

    status, _, err = cli(capsys, "keys", "show", "nosuchkey000")
    assert status == 1 and "HTTP 404" in err and "nosuchkey000" in err


def test_a_wrong_credential_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SWITCHBOARD_ADMIN_KEY", "not-the-admin-key")
    status, _, err = cli(capsys, "keys", "list")
    assert status == 1 and "HTTP 401" in err


def test_the_credential_may_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SWITCHBOARD_ADMIN_KEY")
    path = tmp_path / "admin-key"
    path.write_text(ADMIN + "\n")
    assert cli(capsys, "keys", "list", "--admin-key-file", str(path))[0] == 0
    status, _, err = cli(capsys, "keys", "list", "--admin-key-file", str(tmp_path / "missing"))
    assert status == 2 and "--admin-key-file" in err


def test_no_credential_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SWITCHBOARD_ADMIN_KEY")
    status, out, err = cli(capsys, "keys", "list")
    assert status == 2 and out == "" and "SWITCHBOARD_ADMIN_KEY" in err


def test_an_unreachable_gateway_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as bound:  # bound but not listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        status, out, err = cli(capsys, "keys", "list", "--url", url)
    assert status == 1 and out == ""
    assert url in err and "connection refused" in err


def test_update_needs_something_to_change(gw: GatewayThread, capsys: pytest.CaptureFixture[str]) -> None:
    _, key_id = create(capsys)
    status, _, err = cli(capsys, "keys", "update", key_id)
    assert status == 2 and "nothing to change" in err
    status, _, err = cli(capsys, "keys", "update", key_id, "--rpm", "5", "--clear", "rpm")
    assert status == 2 and "not both" in err

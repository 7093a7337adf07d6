"""Admin writes: every field checked, and a team admin held to its team and its own grant."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.errors import InvalidRequest, PermissionDenied, SwitchboardError
from switchboard.policy.admin import (
    KEY_FIELDS,
    Action,
    Actor,
    audited_fields,
    authorise_action,
    validate_create,
    validate_update,
)
from switchboard.policy.keys import BUDGET_FIELDS, LIMIT_FIELDS, VirtualKey, mint_key

SECRET = b"test-server-secret-0123456789"
NOW = 1_700_000_000.0
MODELS = frozenset({"gpt-4o", "mini", "claude", "router-a"})
GUARDRAILS = frozenset({"pii", "injection"})
CAPPED = (*LIMIT_FIELDS, *BUDGET_FIELDS, "expires_at")


def key(**fields: object) -> VirtualKey:
    vk, _ = mint_key(SECRET, fields, now=NOW - 100, created_by="admin")
    return vk


ADMIN = key(team="search", role="team_admin", rpm=100, tpm=10_000, max_concurrency=5, max_tokens=2000,
            budget_day=10.0, budget_month=100.0, budget_total=1000.0, models=("gpt-4o", "mini"),
            guardrails=("pii",), expires_at=NOW + 1000)
TEAM_ADMIN = Actor.of_key(ADMIN)
OPERATOR = Actor.operator()
# A key of the team as the team admin would have made it: within its grant.
MEMBER = ADMIN.with_changes(
    {"role": "user", "user": "alice@example.com", "rpm": 50, "models": ("mini",)}, now=NOW - 50
)
MEMBER = dataclasses.replace(MEMBER, id="membermember")
OTHER_TEAM = key(team="ads", user="bob")
PEER_ADMIN = key(team="search", role="team_admin")
PLAIN = Actor.of_key(key(team="search"))


def attempt(actor: Actor, target: VirtualKey | None, payload: Mapping[str, object]) -> dict[str, object]:
    if target is None:
        return validate_create(payload, actor, MODELS, GUARDRAILS, now=NOW)
    return validate_update(payload, actor, target, MODELS, GUARDRAILS, now=NOW)


# -- refusals ----------------------------------------------------------------------------------------------

C = None  # the target of a create
REFUSED: list[tuple[str, Actor, VirtualKey | None, dict[str, object], type[SwitchboardError], str | None]] = [
    # A team admin creating a key looser than its own.
    ("create: rpm above its own", TEAM_ADMIN, C, {"rpm": 101}, PermissionDenied, "rpm"),
    ("create: tpm above its own", TEAM_ADMIN, C, {"tpm": 10_001}, PermissionDenied, "tpm"),
    ("create: concurrency above its own", TEAM_ADMIN, C, {"max_concurrency": 6}, PermissionDenied, "max_concurrency"),
    ("create: max_tokens above its own", TEAM_ADMIN, C, {"max_tokens": 2001}, PermissionDenied, "max_tokens"),
    ("create: daily budget above its own", TEAM_ADMIN, C, {"budget_day": 10.5}, PermissionDenied, "budget_day"),
    ("create: monthly budget above", TEAM_ADMIN, C, {"budget_month": 100.01}, PermissionDenied, "budget_month"),
    ("create: total budget above", TEAM_ADMIN, C, {"budget_total": 1e6}, PermissionDenied, "budget_total"),
    ("create: for another team", TEAM_ADMIN, C, {"team": "ads"}, PermissionDenied, "team"),
    ("create: without a team", TEAM_ADMIN, C, {"team": None}, PermissionDenied, "team"),
    ("create: a team admin", TEAM_ADMIN, C, {"role": "team_admin"}, PermissionDenied, "role"),
    ("create: a model outside its allowlist", TEAM_ADMIN, C, {"models": ["claude"]}, PermissionDenied, "models"),
    ("create: one model outside", TEAM_ADMIN, C, {"models": ["mini", "claude"]}, PermissionDenied, "models"),
    ("create: every model", TEAM_ADMIN, C, {"models": []}, PermissionDenied, "models"),
    ("create: without its guardrails", TEAM_ADMIN, C, {"guardrails": []}, PermissionDenied, "guardrails"),
    ("create: other guardrails", TEAM_ADMIN, C, {"guardrails": ["injection"]}, PermissionDenied, "guardrails"),
    ("create: outliving it", TEAM_ADMIN, C, {"expires_at": NOW + 2000}, PermissionDenied, "expires_at"),
    ("create: outliving it (expires_in)", TEAM_ADMIN, C, {"expires_in": 5000}, PermissionDenied, "expires_in"),
    # Fields nobody writes, whoever asks.
    ("create: digest", TEAM_ADMIN, C, {"digest": "0" * 64}, InvalidRequest, "digest"),
    ("create: id", TEAM_ADMIN, C, {"id": "aaaaaaaaaaaa"}, InvalidRequest, "id"),
    ("create: created_by", TEAM_ADMIN, C, {"created_by": "admin"}, InvalidRequest, "created_by"),
    ("create: revoked_at", OPERATOR, C, {"revoked_at": None}, InvalidRequest, "revoked_at"),
    ("create: spend", TEAM_ADMIN, C, {"spend": 0}, InvalidRequest, "spend"),
    ("create: the key itself", OPERATOR, C, {"key": "sk-sb-x"}, InvalidRequest, "key"),
    ("create: hint", OPERATOR, C, {"hint": "abcd"}, InvalidRequest, "hint"),
    ("create: an unknown field", TEAM_ADMIN, C, {"name": "x", "is_admin": True}, InvalidRequest, "is_admin"),
    ("create: a huge unknown field", OPERATOR, C, {"z" * 10_000: 1}, InvalidRequest, "z" * 57 + "..."),
    # Types and ranges.
    ("create: bool as int", TEAM_ADMIN, C, {"rpm": True}, InvalidRequest, "rpm"),
    ("create: float as int", OPERATOR, C, {"rpm": 1.0}, InvalidRequest, "rpm"),
    ("create: zero rpm", OPERATOR, C, {"rpm": 0}, InvalidRequest, "rpm"),
    ("create: a huge rpm", OPERATOR, C, {"tpm": 10**30}, InvalidRequest, "tpm"),
    ("create: NaN budget", TEAM_ADMIN, C, {"budget_day": math.nan}, InvalidRequest, "budget_day"),
    ("create: infinite budget", OPERATOR, C, {"budget_month": math.inf}, InvalidRequest, "budget_month"),
    ("create: a budget too big for a float", OPERATOR, C, {"budget_total": 10**400}, InvalidRequest, "budget_total"),
    ("create: a negative budget", OPERATOR, C, {"budget_month": -1}, InvalidRequest, "budget_month"),
    ("create: bool as budget", OPERATOR, C, {"budget_day": False}, InvalidRequest, "budget_day"),
    ("create: a huge name", TEAM_ADMIN, C, {"name": "x" * 201}, InvalidRequest, "name"),
    ("create: a control character", OPERATOR, C, {"name": "a\x00b"}, InvalidRequest, "name"),
    ("create: a line break in a tag", OPERATOR, C, {"tags": ["a\u2028b"]}, InvalidRequest, "tags"),
    ("create: a C1 control in metadata", OPERATOR, C, {"metadata": {"k\x85": "v"}}, InvalidRequest, "metadata"),
    ("create: a lone surrogate", OPERATOR, C, {"name": "a\ud800"}, InvalidRequest, "name"),
    ("create: a long team", OPERATOR, C, {"team": "t" * 129}, InvalidRequest, "team"),
    ("create: a team with spaces", OPERATOR, C, {"team": "bad team"}, InvalidRequest, "team"),
    ("create: an empty user", OPERATOR, C, {"user": ""}, InvalidRequest, "user"),
    ("create: a role nobody has", OPERATOR, C, {"role": "root"}, InvalidRequest, "role"),
    ("create: null models", OPERATOR, C, {"models": None}, InvalidRequest, "models"),
    ("create: models as a string", OPERATOR, C, {"models": "gpt-4o"}, InvalidRequest, "models"),
    ("create: an unknown model", OPERATOR, C, {"models": ["gpt-9"]}, InvalidRequest, "models"),
    ("create: an unknown guardrail", OPERATOR, C, {"guardrails": ["nope"]}, InvalidRequest, "guardrails"),
    ("create: too many tags", OPERATOR, C, {"tags": [f"t{i}" for i in range(201)]}, InvalidRequest, "tags"),
    ("create: too much metadata", OPERATOR, C, {"metadata": {f"k{i}": "v" for i in range(51)}}, InvalidRequest,
     "metadata"),
    ("create: a long metadata value", OPERATOR, C, {"metadata": {"k": "v" * 501}}, InvalidRequest, "metadata"),
    ("create: a metadata number", OPERATOR, C, {"metadata": {"k": 1}}, InvalidRequest, "metadata"),
    ("create: expired already", OPERATOR, C, {"expires_at": NOW - 1}, InvalidRequest, "expires_at"),
    ("create: a negative lifetime", OPERATOR, C, {"expires_in": -5}, InvalidRequest, "expires_in"),
    ("create: two expiries", OPERATOR, C, {"expires_at": NOW + 9, "expires_in": 9}, InvalidRequest, "expires_in"),
    ("create: a team admin without a team", OPERATOR, C, {"role": "team_admin"}, InvalidRequest, "team"),
    # A team admin changing keys it may not touch.
    ("update: its own limits", TEAM_ADMIN, ADMIN, {"rpm": 1000}, PermissionDenied, None),
    ("update: its own expiry", TEAM_ADMIN, ADMIN, {"expires_at": None}, PermissionDenied, None),
    ("update: its own name", TEAM_ADMIN, ADMIN, {"name": "me"}, PermissionDenied, None),
    ("update: another team's key", TEAM_ADMIN, OTHER_TEAM, {"name": "x"}, PermissionDenied, "team"),
    ("update: a peer team admin", TEAM_ADMIN, PEER_ADMIN, {"rpm": 1}, PermissionDenied, "role"),
    # … or loosening one it may.
    ("update: move to another team", TEAM_ADMIN, MEMBER, {"team": "ads"}, PermissionDenied, "team"),
    ("update: clear the team", TEAM_ADMIN, MEMBER, {"team": None}, PermissionDenied, "team"),
    ("update: promote", TEAM_ADMIN, MEMBER, {"role": "team_admin"}, PermissionDenied, "role"),
    ("update: remove the rpm", TEAM_ADMIN, MEMBER, {"rpm": None}, PermissionDenied, "rpm"),
    ("update: remove the budget", TEAM_ADMIN, MEMBER, {"budget_total": None}, PermissionDenied, "budget_total"),
    ("update: remove the expiry", TEAM_ADMIN, MEMBER, {"expires_at": None}, PermissionDenied, "expires_at"),
    ("update: every model", TEAM_ADMIN, MEMBER, {"models": []}, PermissionDenied, "models"),
    ("update: raise the rpm", TEAM_ADMIN, MEMBER, {"rpm": 1000}, PermissionDenied, "rpm"),
    ("update: raise the tpm", TEAM_ADMIN, MEMBER, {"tpm": 10**6}, PermissionDenied, "tpm"),
    ("update: drop guardrails", TEAM_ADMIN, MEMBER, {"guardrails": []}, PermissionDenied, "guardrails"),
    ("update: extend the expiry", TEAM_ADMIN, MEMBER, {"expires_in": 10**6}, PermissionDenied, "expires_in"),
    ("update: the digest", TEAM_ADMIN, MEMBER, {"digest": "0" * 64}, InvalidRequest, "digest"),
    ("update: un-revoke", OPERATOR, MEMBER, {"revoked_at": None}, InvalidRequest, "revoked_at"),
    ("update: created_at", OPERATOR, MEMBER, {"created_at": 0}, InvalidRequest, "created_at"),
    ("update: bool budget", TEAM_ADMIN, MEMBER, {"budget_day": True}, InvalidRequest, "budget_day"),
    ("update: clear a team admin's team", OPERATOR, ADMIN, {"team": None}, InvalidRequest, "team"),
    # A plain key on the admin API at all.
    ("plain key: create", PLAIN, C, {}, PermissionDenied, None),
    ("plain key: create with a bad field", PLAIN, C, {"digest": "x"}, PermissionDenied, None),
    ("plain key: update", PLAIN, MEMBER, {"name": "x"}, PermissionDenied, None),
]


@pytest.mark.parametrize(("actor", "target", "payload", "error", "param"),
                         [pytest.param(*case[1:], id=case[0]) for case in REFUSED])
def test_refused(actor: Actor, target: VirtualKey | None, payload: dict[str, object], error: type[SwitchboardError],
                 param: str | None) -> None:
    with pytest.raises(SwitchboardError) as caught:
        attempt(actor, target, payload)
    assert type(caught.value) is error
    assert caught.value.param == param
    if param is not None:
        assert f"'{param}'" in caught.value.message
    assert len(caught.value.message) < 500


def test_the_table_is_large_enough() -> None:
    escalations = [case for case in REFUSED if case[4] is PermissionDenied]
    assert len(escalations) >= 25 and len(REFUSED) >= 60


@pytest.mark.parametrize("payload", [[("rpm", 1)], "rpm=1", None, 5])
def test_a_payload_must_be_an_object(payload: object) -> None:
    with pytest.raises(InvalidRequest, match="JSON object"):
        validate_create(payload, OPERATOR, MODELS, GUARDRAILS, now=NOW)  # type: ignore[arg-type]


def test_field_names_must_be_strings() -> None:
    with pytest.raises(InvalidRequest, match="strings"):
        validate_create({1: "x"}, OPERATOR, MODELS, GUARDRAILS, now=NOW)  # type: ignore[dict-item]


# -- actions --------------------------------------------------------------------------------------------------

NO_TEAM_ADMIN = Actor.of_key(dataclasses.replace(ADMIN, team=None))

DENIED_ACTIONS: list[tuple[Actor, Action, VirtualKey | None, str | None]] = [
    (TEAM_ADMIN, "erase", None, None),
    (TEAM_ADMIN, "audit", None, None),
    (TEAM_ADMIN, "read", OTHER_TEAM, "team"),
    (TEAM_ADMIN, "rotate", OTHER_TEAM, "team"),
    (TEAM_ADMIN, "revoke", OTHER_TEAM, "team"),
    (TEAM_ADMIN, "rotate", ADMIN, None),
    (TEAM_ADMIN, "revoke", ADMIN, None),
    (TEAM_ADMIN, "update", ADMIN, None),
    (TEAM_ADMIN, "rotate", PEER_ADMIN, "role"),
    (TEAM_ADMIN, "revoke", PEER_ADMIN, "role"),
    (PLAIN, "read", None, None),
    (PLAIN, "read", MEMBER, None),
    (PLAIN, "revoke", MEMBER, None),
    (PLAIN, "audit", None, None),
    (NO_TEAM_ADMIN, "create", None, "team"),
    (NO_TEAM_ADMIN, "read", None, "team"),
]


@pytest.mark.parametrize(("actor", "action", "target", "param"), DENIED_ACTIONS)
def test_actions_refused(actor: Actor, action: Action, target: VirtualKey | None, param: str | None) -> None:
    with pytest.raises(PermissionDenied) as caught:
        authorise_action(actor, action, target)
    assert caught.value.param == param


ALLOWED_ACTIONS: list[tuple[Actor, Action, VirtualKey | None]] = [
    (TEAM_ADMIN, "create", None),
    (TEAM_ADMIN, "read", None),
    (TEAM_ADMIN, "read", MEMBER),
    (TEAM_ADMIN, "read", ADMIN),
    (TEAM_ADMIN, "read", PEER_ADMIN),
    (TEAM_ADMIN, "update", MEMBER),
    (TEAM_ADMIN, "rotate", MEMBER),
    (TEAM_ADMIN, "revoke", MEMBER),
    *[(OPERATOR, action, target) for action in ("create", "read", "update", "rotate", "revoke", "erase", "audit")
      for target in (None, ADMIN, OTHER_TEAM)],
]


@pytest.mark.parametrize(("actor", "action", "target"), ALLOWED_ACTIONS)
def test_actions_allowed(actor: Actor, action: Action, target: VirtualKey | None) -> None:
    authorise_action(actor, action, target)


def test_an_action_on_a_key_needs_the_key() -> None:
    with pytest.raises(ValueError, match="target"):
        authorise_action(TEAM_ADMIN, "revoke", None)


def test_actors_name_themselves() -> None:
    assert (OPERATOR.label, OPERATOR.team, OPERATOR.is_operator) == ("admin", None, True)
    assert (TEAM_ADMIN.label, TEAM_ADMIN.team, TEAM_ADMIN.is_operator) == (f"key:{ADMIN.id}", "search", False)


# -- what is allowed ----------------------------------------------------------------------------------------


def test_a_team_admins_new_key_inherits_its_grant() -> None:
    clean = attempt(TEAM_ADMIN, None, {"name": "ci", "rpm": None})
    assert clean == {
        "name": "ci", "team": "search", "rpm": 100, "tpm": 10_000, "max_concurrency": 5, "max_tokens": 2000,
        "budget_day": 10.0, "budget_month": 100.0, "budget_total": 1000.0, "models": ("gpt-4o", "mini"),
        "guardrails": ("pii",), "expires_at": NOW + 1000,
    }


def test_a_team_admin_may_grant_less() -> None:
    payload: dict[str, object] = {
        "name": "ci", "user": "alice@example.com", "team": "search", "role": "user", "rpm": 10, "tpm": 10_000,
        "budget_day": 0, "models": ["mini", "mini"], "guardrails": ["injection", "pii"], "expires_in": 60,
        "metadata": {"cost_centre": "42"}, "tags": ["batch"],
    }
    clean = attempt(TEAM_ADMIN, None, payload)
    assert clean["rpm"] == 10 and clean["budget_day"] == 0.0 and clean["models"] == ("mini",)
    assert clean["guardrails"] == ("injection", "pii") and clean["expires_at"] == NOW + 60
    assert clean["max_concurrency"] == 5  # left out: inherited
    vk, _ = mint_key(SECRET, clean, now=NOW, created_by=TEAM_ADMIN.label)
    assert (vk.team, vk.user, vk.role, vk.metadata, vk.tags, vk.created_by) == (
        "search", "alice@example.com", "user", {"cost_centre": "42"}, ("batch",), f"key:{ADMIN.id}")


def test_a_team_admin_may_tighten_a_team_key() -> None:
    payload: dict[str, object] = {
        "rpm": 20, "name": None, "metadata": {}, "team": "search", "role": "user", "expires_in": 10, "budget_total": 5,
    }
    clean = attempt(TEAM_ADMIN, MEMBER, payload)
    assert clean == {"rpm": 20, "name": None, "metadata": {}, "team": "search", "role": "user",
                     "expires_at": NOW + 10, "budget_total": 5.0}
    assert attempt(TEAM_ADMIN, MEMBER, {}) == {}


def test_a_team_admin_without_limits_of_its_own_passes_none_on() -> None:
    free = Actor.of_key(key(team="lab", role="team_admin"))
    assert attempt(free, None, {}) == {"team": "lab"}
    assert attempt(free, None, {"rpm": 10**9, "models": ["claude"]})["rpm"] == 10**9


def test_the_operator_may_write_every_field() -> None:
    payload: dict[str, object] = {
        "name": "Ops", "team": "search", "user": "ops@example.com", "role": "team_admin", "models": ["claude"],
        "rpm": 1, "tpm": 2, "max_concurrency": 3, "max_tokens": 4, "budget_day": 1, "budget_month": 2.5,
        "budget_total": None, "guardrails": ["pii"], "metadata": {"a": "b"}, "tags": ["t"], "expires_at": NOW + 1,
    }
    clean = attempt(OPERATOR, None, payload)
    assert set(clean) == set(KEY_FIELDS)
    assert clean["models"] == ("claude",) and clean["budget_day"] == 1.0 and clean["budget_total"] is None
    assert attempt(OPERATOR, ADMIN, {"rpm": None, "models": [], "guardrails": [], "expires_at": None}) == {
        "rpm": None, "models": (), "guardrails": (), "expires_at": None}
    assert attempt(OPERATOR, MEMBER, {"role": "team_admin"}) == {"role": "team_admin"}


def test_audited_fields_are_names_only_and_bounded() -> None:
    assert audited_fields({"rpm": 5, "name": "secret name", "digest": "x"}) == ("digest", "name", "rpm")
    many = audited_fields({"y" * 1000: 1, **{f"f{i:02}": i for i in range(40)}})
    assert len(many) == 32 and all(len(name) <= 64 for name in many)
    assert audited_fields(["rpm"]) == ()


def test_every_writable_field_is_documented() -> None:
    assert set(KEY_FIELDS) == {"name", "team", "user", "role", "models", "rpm", "tpm", "max_concurrency", "max_tokens",
                               "budget_day", "budget_month", "budget_total", "guardrails", "metadata", "tags",
                               "expires_at"}
    assert all(spec.doc for spec in KEY_FIELDS.values())


# -- random payloads ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
labels = st.sampled_from(["gpt-4o", "mini", "claude", "router-a", "gpt-9", "pii", "injection", "", "x" * 300])
plausible: dict[str, st.SearchStrategy[object]] = {
    **{f: st.none() | st.integers(-1, 20_000) for f in LIMIT_FIELDS},
    **{f: st.none() | st.floats(-1, 2000) | st.integers(0, 2000) for f in BUDGET_FIELDS},
    "team": st.sampled_from(["search", "ads", None, "", "a b"]),
    "user": st.none() | st.sampled_from(["alice@example.com", "bob", "x" * 129]),
    "role": st.sampled_from(["user", "team_admin", "admin"]),
    "models": st.lists(labels, max_size=4),
    "guardrails": st.lists(labels, max_size=3),
    "tags": st.lists(st.text(max_size=5), max_size=3),
    "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    "name": st.none() | st.text(max_size=10),
    "expires_at": st.none() | st.floats(NOW - 10, NOW + 5000),
    "expires_in": st.floats(-10, 5000),
}
stray_names = st.sampled_from(["digest", "id", "spend", "revoked_at"]) | st.text(max_size=6)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, object]:
    """Mostly writable fields with plausible values; now and then any JSON value, or a field nobody may write."""
    chosen = draw(st.lists(st.sampled_from(sorted(plausible)), max_size=6, unique=True))
    if draw(st.integers(0, 9)) == 0:
        chosen.append(draw(stray_names))
    payload: dict[str, object] = {}
    for name in chosen:
        wild = name not in plausible or draw(st.integers(0, 9)) == 0
        payload[name] = draw(json_values if wild else plausible[name])
    return payload


def within_grant(admin: VirtualKey, vk: VirtualKey) -> bool:
    capped = all(
        getattr(admin, f) is None or (getattr(vk, f) is not None and getattr(vk, f) <= getattr(admin, f))
        for f in CAPPED
    )
    models = not admin.models or (bool(vk.models) and set(vk.models) <= set(admin.models))
    return (capped and models and vk.team == admin.team and vk.role == "user"
            and set(admin.guardrails) <= set(vk.guardrails))


@settings(max_examples=400, deadline=None)
@given(payload=payloads(), actor=st.sampled_from([OPERATOR, TEAM_ADMIN, PLAIN]),
       target=st.sampled_from([None, MEMBER, ADMIN, OTHER_TEAM]))
def test_random_payloads_are_accepted_or_refused_cleanly(
    payload: dict[str, object], actor: Actor, target: VirtualKey | None
) -> None:
    try:
        clean = attempt(actor, target, payload)
    except (InvalidRequest, PermissionDenied):
        return
    if target is None:
        written, _ = mint_key(SECRET, clean, now=NOW, created_by=actor.label)
    else:
        written = target.with_changes(clean, now=NOW)
    assert set(clean) <= set(KEY_FIELDS)
    assert written.usable(NOW) is None or target is not None
    if actor.key is not None:
        assert actor is TEAM_ADMIN and within_grant(ADMIN, written)

"""``POST /session``: ephemeral tokens minted from the emulation, or from the providers' REST APIs
(here: the dev server's own emulation of them, on a second server with a fake key).

Request and response shapes: openai-node ``src/resources/realtime/client-secrets.ts``
(7b7d6ca71130d37ec09792c50056b47861f2eccf); googleapis/js-genai ``src/tokens.ts`` and
``src/converters/_tokens_converters.ts`` (6e9b35c45e21f0d37179a24d29dca01ebed698e6).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devserver.app import TOKENS, make_app
from devserver.tokens import ProviderConfig, RateLimiter, TokenStore, digest

from .aio import run
from .emulated_client import closed_stats, converse

OPENAI_KEY = "sk-test-" + "k" * 40
GEMINI_KEY = "AIza" + "g" * 35


def origin(client: TestClient) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{client.port}"}


def with_client(test, **app_kw: Any) -> Any:
    async def runner() -> Any:
        app = make_app(**app_kw)
        async with TestClient(TestServer(app)) as client:
            return await test(app, client)

    return run(runner())


# ---------------------------------------------------------------------- emulated tokens


def test_an_emulated_openai_token_opens_the_emulated_socket() -> None:
    async def test(app, client):
        resp = await client.post(
            "/session?provider=openai&scenario=chat&turns=1&tokens=5&burst=0&hangup=0.05", headers=origin(client)
        )
        body = await resp.json()
        parts = urlsplit(body["url"])
        r = await converse(client, f"{parts.path}?{parts.query}", "openai-realtime", token=body["token"])
        return resp, body, r

    resp, body, r = with_client(test)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert body["provider"] == "openai" and body["emulated"] is True and body["model"] == "gpt-realtime"
    assert body["token"].startswith("ek_") and body["token"] not in body["url"]
    url = urlsplit(body["url"])
    assert url.scheme == "ws" and url.path == "/openai/v1/realtime"
    assert dict(parse_qsl(url.query)) == {
        "model": "gpt-realtime",
        "scenario": "chat",
        "turns": "1",
        "tokens": "5",
        "burst": "0",
        "hangup": "0.05",
    }
    assert body["expires_at"] > 0 and r.close_code == 1000 and r.text


def test_an_emulated_gemini_token_is_single_use() -> None:
    async def test(app, client):
        resp = await client.post(
            "/session?provider=gemini&model=gemini-live-test&scenario=chat&turns=1&tokens=5&burst=0&hangup=0.05",
            headers=origin(client),
        )
        body = await resp.json()
        parts = urlsplit(body["url"])
        path = f"{parts.path}?{parts.query}"
        first = await converse(client, path, "gemini-live", token=body["token"])
        second = await converse(client, path, "gemini-live", token=body["token"])
        return body, first, second

    body, first, second = with_client(test)
    assert body["token"].startswith("auth_tokens/") and body["emulated"] is True and body["model"] == "gemini-live-test"
    assert urlsplit(body["url"]).path.endswith("v1alpha.GenerativeService.BidiGenerateContentConstrained")
    assert first.close_code == 1000 and first.text
    assert second.close_code == 1008 and not second.text


def test_a_scenario_parameter_cannot_smuggle_a_credential_or_a_long_value() -> None:
    async def test(app, client):
        out = []
        for query in (
            "provider=gemini&key=AIzaXYZ",
            "provider=openai&scenario=" + "x" * 65,
            "provider=openai&model=a%20b",
        ):
            resp = await client.post(f"/session?{query}", headers=origin(client))
            out.append((resp.status, await resp.json()))
        return out

    (s1, b1), (s2, b2), (s3, b3) = with_client(test)
    assert s1 == 200 and "key=" not in b1["url"]
    assert s2 == 400 and b2["error"]["code"] == "bad_params"
    assert s3 == 400 and b3["error"]["code"] == "bad_model"


# ---------------------------------------------------------------------- who may mint


def test_only_the_servers_own_pages_may_mint() -> None:
    async def test(app, client):
        out = {}
        for name, headers in (
            ("no origin", {}),
            ("foreign", {"Origin": "http://evil.example"}),
            ("allowed", {"Origin": "http://localhost:7860"}),
            ("own", origin(client)),
        ):
            resp = await client.post("/session?provider=openai", headers=headers)
            out[name] = (resp.status, await resp.json(), resp.headers.get("Cache-Control"))
        get = await client.get("/session?provider=openai", headers=origin(client))
        out["get"] = (get.status, await get.json(), get.headers.get("Allow"))
        return out

    out = with_client(test, allowed_origins=["http://localhost:7860"])
    assert out["no origin"][0] == 403 and out["no origin"][1]["error"]["code"] == "forbidden_origin"
    assert out["foreign"][0] == 403 and "evil.example" in out["foreign"][1]["error"]["message"]
    assert out["allowed"][0] == 200 and out["own"][0] == 200
    assert all(v[2] == "no-store" for k, v in out.items() if k != "get")
    assert out["get"][0] == 405 and out["get"][2] == "POST" and out["get"][1]["error"]["code"] == "method_not_allowed"


def test_minting_is_rate_limited_per_client() -> None:
    async def test(app, client):
        statuses = []
        for _ in range(3):
            resp = await client.post("/session?provider=gemini", headers=origin(client))
            statuses.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
        return statuses

    (a, _, _), (b, _, _), (c, retry, body) = with_client(test, session_rate_limit=(2, 60.0))
    assert (a, b, c) == (200, 200, 429)
    assert 1 <= int(retry) <= 60 and body["error"]["code"] == "rate_limited"


def test_the_rate_limiter_slides_and_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, max_clients=3, clock=lambda: now[0])
    assert limiter.take("a") is None and limiter.take("a") is None and limiter.take("a") == 10.0
    now[0] = 10.5
    assert limiter.take("a") is None
    for name in "bcdef":
        limiter.take(name)
    assert len(limiter._events) == 3


# ---------------------------------------------------------------------- real tokens (local REST emulation)


def with_provider(test, *, keys: dict[str, str], **app_kw: Any) -> Any:
    """``test(dev_app, dev_client, provider_client)``: the dev server minting with ``keys`` from a
    second server emulating both providers (which accepts only the two fake keys)."""

    async def runner() -> Any:
        provider_app = make_app(emulated_provider_keys={"openai": {OPENAI_KEY}, "gemini": {GEMINI_KEY}})
        async with TestClient(TestServer(provider_app)) as provider:
            base = f"http://127.0.0.1:{provider.port}"
            config = ProviderConfig(
                openai_key=keys.get("openai"),
                gemini_key=keys.get("gemini"),
                openai_base=base + "/openai/v1",  # the SDKs' OPENAI_BASE_URL form: /v1 is stripped
                gemini_base=base + "/gemini",
            )
            dev_app = make_app(providers=config, **app_kw)
            async with TestClient(TestServer(dev_app)) as dev:
                return await test(dev_app, dev, provider)

    return run(runner())


def test_a_real_mint_sends_the_key_to_the_provider_and_never_shows_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def test(dev_app, dev, provider):
        out = {}
        for name in ("openai", "gemini"):
            resp = await dev.post(f"/session?provider={name}&scenario=voice", headers=origin(dev))
            out[name] = (resp.status, await resp.text(), dict(resp.headers))
        body = json.loads(out["openai"][1])
        parts = urlsplit(body["url"])
        r = await converse(
            provider,
            f"{parts.path}?{parts.query}&scenario=chat&turns=1&tokens=5&burst=0&hangup=0.05",
            "openai-realtime",
            token=body["token"],
        )
        gbody = json.loads(out["gemini"][1])
        gparts = urlsplit(gbody["url"])
        g = await converse(
            provider,
            f"{gparts.path}?scenario=chat&turns=1&tokens=5&burst=0&hangup=0.05",
            "gemini-live",
            token=gbody["token"],
        )
        stats = [await (await c.get("/stats")).text() for c in (dev, provider)]
        csp = (await dev.get("/stats")).headers["Content-Security-Policy"]
        return out, r, g, stats, csp, provider.port

    out, r, g, stats, csp, port = with_provider(test, keys={"openai": OPENAI_KEY, "gemini": GEMINI_KEY})
    openai = json.loads(out["openai"][1])
    gemini = json.loads(out["gemini"][1])
    assert out["openai"][0] == 200 and openai["emulated"] is False and openai["token"].startswith("ek_")
    assert openai["url"] == f"ws://127.0.0.1:{port}/openai/v1/realtime?model=gpt-realtime"  # no scenario for a provider
    assert out["gemini"][0] == 200 and gemini["emulated"] is False and gemini["token"].startswith("auth_tokens/")
    assert (
        gemini["url"]
        == f"ws://127.0.0.1:{port}/gemini/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
    )
    # The provider accepted the minted tokens: the keys reached it.
    assert r.close_code == 1000 and r.text and g.close_code == 1000 and g.text
    everything = json.dumps([out, stats]) + "\n".join(rec.getMessage() for rec in caplog.records)
    for secret in (OPENAI_KEY, GEMINI_KEY):
        assert secret not in everything
    for minted in (openai["token"], gemini["token"]):
        assert minted not in "\n".join(rec.getMessage() for rec in caplog.records) and minted not in json.dumps(stats)
    assert f"ws://127.0.0.1:{port}" in csp.split("connect-src")[1].split(";")[0]


def test_a_wrong_key_is_a_502_that_does_not_quote_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_openai, wrong_gemini = "sk-wrong-" + "w" * 40, "AIza" + "w" * 35

    async def test(dev_app, dev, provider):
        out = []
        for name in ("openai", "gemini"):
            resp = await dev.post(f"/session?provider={name}", headers=origin(dev))
            out.append((resp.status, await resp.text()))
        return out

    out = with_provider(test, keys={"openai": wrong_openai, "gemini": wrong_gemini})
    (s1, t1), (s2, t2) = out
    assert s1 == s2 == 502
    assert json.loads(t1)["error"] == {
        "code": "provider_error",
        "message": "the OpenAI API refused to mint a token: HTTP 401 invalid_api_key",
    }
    assert json.loads(t2)["error"]["message"] == "the Gemini API refused to mint a token: HTTP 400 INVALID_ARGUMENT"
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    assert wrong_openai not in t1 + t2 + logs and wrong_gemini not in t1 + t2 + logs


def test_an_unreachable_provider_is_a_502() -> None:
    async def test(app, client):
        resp = await client.post("/session?provider=openai", headers=origin(client))
        return resp.status, await resp.json()

    config = ProviderConfig(openai_key=OPENAI_KEY, openai_base="http://127.0.0.1:9")
    status, body = with_client(test, providers=config)
    assert status == 502 and body["error"]["code"] == "provider_unreachable" and OPENAI_KEY not in json.dumps(body)


# ---------------------------------------------------------------------- the REST emulations themselves


def test_the_openai_client_secrets_endpoint_checks_key_and_body() -> None:
    async def test(app, client):
        async def post(body: Any, key: str | None = OPENAI_KEY) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            resp = await client.post("/openai/v1/realtime/client_secrets", json=body, headers=headers)
            return resp.status, await resp.json()

        good = {
            "expires_after": {"anchor": "created_at", "seconds": 60},
            "session": {"type": "realtime", "model": "gpt-realtime"},
        }
        return [
            await post(good),
            await post(good, None),
            await post(good, "sk-other-" + "o" * 30),
            await post({**good, "expires_after": {"seconds": 5}}),
            await post({"session": {"modalities": ["audio"]}}),
            await post({**good, "voice": "alloy"}),
        ]

    (ok, secret), (s1, e1), (s2, e2), (s3, e3), (s4, e4), (s5, e5) = with_client(
        test, emulated_provider_keys={"openai": {OPENAI_KEY}}
    )
    assert ok == 200 and secret["value"].startswith("ek_") and secret["session"]["type"] == "realtime"
    assert secret["expires_at"] > 0 and secret["session"]["model"] == "gpt-realtime"
    assert (s1, e1["error"]["code"]) == (401, None) and "didn't provide an API key" in e1["error"]["message"]
    assert (s2, e2["error"]["code"]) == (401, "invalid_api_key") and "o" * 30 not in e2["error"]["message"]
    assert (s3, e3["error"]["param"]) == (400, "expires_after.seconds")
    assert (s4, e4["error"]["param"]) == (400, "session.type")
    assert (s5, e5["error"]["code"]) == (400, "unknown_parameter")


def test_the_gemini_auth_tokens_endpoint_checks_key_and_body() -> None:
    async def test(app, client):
        async def post(body: Any, key: str | None = GEMINI_KEY) -> tuple[int, Any]:
            headers = {"x-goog-api-key": key} if key else {}
            resp = await client.post("/gemini/v1alpha/auth_tokens", json=body, headers=headers)
            return resp.status, await resp.json()

        good = {"uses": 2, "bidiGenerateContentSetup": {"model": "models/x"}, "fieldMask": "model"}
        return [
            await post(good),
            await post(good, None),
            await post(good, "AIza" + "z" * 35),
            await post({"uses": "one"}),
            await post({"expireTime": "2001-01-01T00:00:00Z"}),
            await post({"liveConnectConstraints": {"model": "x"}}),
        ], app[TOKENS]

    results, store = with_client(test, emulated_provider_keys={"gemini": {GEMINI_KEY}})
    (ok, token), (s1, e1), (s2, e2), (s3, _), (s4, e4), (s5, e5) = results
    assert ok == 200 and token["name"].startswith("auth_tokens/")
    record = store.find("gemini", token["name"])
    assert record is not None and record.uses_left == 2 and record.model == "models/x"
    assert (s1, e1["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (s2, e2["error"]["status"]) == (400, "INVALID_ARGUMENT") and e2["error"]["details"][0][
        "reason"
    ] == "API_KEY_INVALID"
    assert s3 == 400 and s4 == 400 and "future" in e4["error"]["message"]
    assert s5 == 400 and 'Unknown name "liveConnectConstraints"' in e5["error"]["message"]


# ---------------------------------------------------------------------- the store


def test_the_store_keeps_digests_expires_and_counts_uses() -> None:
    now = [1000.0]
    store = TokenStore(limit=3, clock=lambda: now[0])
    ek, record = store.mint_openai("gpt-realtime", seconds=60)
    assert store.find("openai", ek) is record and store.find("gemini", ek) is None
    assert ek not in repr(store._tokens) and digest(ek) in store._tokens
    _, grecord = store.mint_gemini("models/x", uses=1, new_session_expire_time=now[0] + 30)
    assert store.start_session(grecord) is None and "no uses left" in store.start_session(grecord)
    assert store.start_session(grecord, resumed=True) is None  # resuming is not a use
    now[0] += 31
    assert "newSessionExpireTime" in store.start_session(
        store.mint_gemini("models/x", new_session_expire_time=1030.0)[1]
    )
    now[0] += 60
    assert store.find("openai", ek) is None  # expired
    for _ in range(5):
        store.mint_openai("gpt-realtime")
    assert len(store) == 3


def test_provider_config_reads_the_environment_and_never_prints_keys() -> None:
    config = ProviderConfig.from_env(
        {
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": "https://proxy.example/v1/",
            "GOOGLE_GEMINI_BASE_URL": "http://g.example",
        }
    )
    assert config.openai_base == "https://proxy.example" and config.gemini_base == "http://g.example"
    assert config.key("openai") == OPENAI_KEY and config.key("gemini") is None
    assert config.connect_src() == ("wss://proxy.example",) and OPENAI_KEY not in repr(config)
    with pytest.raises(ValueError):
        ProviderConfig(openai_base="ftp://x")


def test_stats_never_hold_a_gemini_credential() -> None:
    async def test(app, client):
        tok = app[TOKENS].mint_gemini("models/x")[0]
        path = "/gemini/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
        await converse(client, f"{path}?scenario=chat&turns=1&tokens=3&burst=0&hangup=0.05", "gemini-live", token=tok)
        return tok, await closed_stats(client)

    tok, st = with_client(test)
    assert st["params"]["access_token"] == "[redacted]" and tok not in json.dumps(st)

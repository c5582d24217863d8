"""Ephemeral credentials the way a real page gets them: ``POST /session?provider=openai|gemini``.

A page must never hold a provider's long-lived key. It asks its own backend (this endpoint) for
a short-lived credential and the URL to connect to::

    POST /session?provider=openai[&model=gpt-realtime][&scenario=voice&seconds=2 ...]
    -> 200 {"token": "ek_...", "url": "ws://127.0.0.1:8000/openai/v1/realtime?model=...",
            "expires_at": 1767225600, "provider": "openai", "model": "gpt-realtime", "emulated": true}

* **With a key** (``OPENAI_API_KEY`` / ``GEMINI_API_KEY`` in the server's environment, read by
  serve.py) the server mints a real one from the provider's REST API: OpenAI ``POST
  {base}/v1/realtime/client_secrets`` (Bearer key; openai-node ``src/resources/realtime/
  client-secrets.ts``) -> ``value`` ``ek_...``; Gemini ``POST {base}/v1alpha/auth_tokens``
  (``x-goog-api-key``; js-genai ``src/tokens.ts``, which sends the SDK's ``liveConnectConstraints``
  as ``bidiGenerateContentSetup``) -> ``name`` ``auth_tokens/...``. ``url`` is then the
  provider's socket (``wss://api.openai.com/v1/realtime?model=...``, Gemini's
  ``...BidiGenerateContentConstrained``), and ``emulated`` is false. The base URLs are
  configurable (``--openai-base``/``OPENAI_BASE_URL``, ``--gemini-base``/``GEMINI_BASE_URL``) so
  that tests point them at the dev server's own emulation of those REST endpoints
  (devserver/openai_realtime.py, devserver/gemini_live.py).
* **Without a key** it mints from the dev server's own emulation (a ``TokenStore`` the emulated
  sockets check) and returns the local socket URL, carrying the page's scenario parameters.

``url`` never carries the credential: OpenAI takes it as a subprotocol, Gemini as
``?access_token=`` which the client's codec adds. ``expires_at`` (Unix seconds) is when the
token stops opening new sessions: the client secret's expiry (OpenAI), ``newSessionExpireTime``
(Gemini; the session itself may then run until ``expireTime``).

Minting costs money and grants access, so the endpoint:

* answers **POST only**, and only **pages of this server** (an ``Origin`` of its own, or one
  allowed with ``--allow-origin``; a request without ``Origin`` is refused too: only pages mint);
* sends ``Cache-Control: no-store``;
* is **rate-limited per client address** (20 per minute by default; 429 with ``Retry-After``);
* never returns, logs or records the long-lived key, nor logs a minted token; errors are JSON
  ``{"error": {"code", "message"}}`` and never relay a provider's message (it may quote the key).

Memory bounds: the store keeps at most ``MAX_TOKENS`` live tokens (expired ones are purged, then
the oldest), keyed by their SHA-256 (the store holds no token text); the rate limiter tracks at
most ``MAX_CLIENTS`` addresses.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from pyclient.protocols.gemini_live import DEFAULT_MODEL as GEMINI_DEFAULT_MODEL
from pyclient.protocols.gemini_live import TOKEN_PATH as GEMINI_TOKEN_PATH
from pyclient.protocols.openai_realtime import DEFAULT_MODEL as OPENAI_DEFAULT_MODEL

from .security import AccessPolicy

log = logging.getLogger("pyclient.devserver")

PROVIDERS = ("openai", "gemini")
OPENAI_BASE = "https://api.openai.com"
GEMINI_BASE = "https://generativelanguage.googleapis.com"
OPENAI_SECRET_S = 600  # what the dev server asks for (the API allows 10..7200, default 600)
GEMINI_EXPIRE_S = 30 * 60  # expireTime: the API's default
GEMINI_NEW_SESSION_S = 60  # newSessionExpireTime: the API's default
MAX_TOKENS = 1024
MAX_CLIENTS = 10_000
RATE_LIMIT = (20, 60.0)  # tokens per window (seconds) per client address
MAX_PASSTHROUGH = 32  # scenario parameters carried into an emulated socket's URL
MAX_PARAM_CHARS = 64
PROVIDER_TIMEOUT_S = 10.0
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RESERVED_PARAMS = ("provider", "model", "key", "access_token")


def digest(token: str) -> str:
    """What the store keys a token by (it never holds the token itself)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def rfc3339(t: float) -> str:
    """Unix seconds as a protobuf JSON Timestamp (``2026-01-01T12:00:00Z``)."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_rfc3339(text: Any) -> float | None:
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


# --------------------------------------------------------------------------- the store


@dataclass
class MintedToken:
    """One credential the emulation minted. Times are Unix seconds."""

    provider: str
    model: str
    created: float
    expires_at: float  # OpenAI: the secret's expiry; Gemini: expireTime (messages rejected after)
    new_session_until: float  # no new session after this (Gemini newSessionExpireTime; OpenAI = expires_at)
    uses_left: int | None = None  # Gemini: uses (None: unlimited); OpenAI: None (any number of sessions)
    config: dict[str, Any] = field(default_factory=dict)  # the session / setup it was minted with


class TokenStore:
    """Credentials minted by the emulated providers, checked by the emulated sockets."""

    def __init__(self, limit: int = MAX_TOKENS, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._tokens: OrderedDict[str, MintedToken] = OrderedDict()
        self.minted = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def _add(self, token: str, record: MintedToken) -> str:
        now = self.clock()
        for key in [k for k, t in self._tokens.items() if t.expires_at <= now]:
            del self._tokens[key]
        while len(self._tokens) >= self.limit:
            self._tokens.popitem(last=False)
        self._tokens[digest(token)] = record
        self.minted += 1
        return token

    def mint_openai(
        self, model: str, seconds: float = OPENAI_SECRET_S, session: dict[str, Any] | None = None
    ) -> tuple[str, MintedToken]:
        """A client secret ``ek_...`` valid for ``seconds``; it may open any number of sessions until then."""
        now = self.clock()
        record = MintedToken("openai", model, now, now + seconds, now + seconds, None, dict(session or {}))
        return self._add("ek_" + secrets.token_hex(16), record), record

    def mint_gemini(
        self,
        model: str,
        *,
        uses: int | None = 1,
        expire_time: float | None = None,
        new_session_expire_time: float | None = None,
        setup: dict[str, Any] | None = None,
    ) -> tuple[str, MintedToken]:
        """An ``auth_tokens/...`` name: ``uses`` sessions (None or 0: unlimited) until the times given."""
        now = self.clock()
        expire = expire_time if expire_time is not None else now + GEMINI_EXPIRE_S
        new_session = new_session_expire_time if new_session_expire_time is not None else now + GEMINI_NEW_SESSION_S
        record = MintedToken("gemini", model, now, expire, new_session, uses or None, dict(setup or {}))
        return self._add("auth_tokens/" + secrets.token_hex(16), record), record

    def find(self, provider: str, token: str) -> MintedToken | None:
        """The live record of ``token`` (None if unknown, expired or another provider's)."""
        record = self._tokens.get(digest(token))
        if record is None or record.provider != provider or record.expires_at <= self.clock():
            return None
        return record

    def start_session(self, record: MintedToken, resumed: bool = False) -> str | None:
        """Count a new session against ``record``; why it may not open one (None: it may).
        Resuming a session neither counts as a use nor needs ``new_session_until`` (Gemini's rules)."""
        if resumed:
            return None
        if self.clock() > record.new_session_until:
            return "the token may no longer open new sessions (newSessionExpireTime has passed)"
        if record.uses_left is not None:
            if record.uses_left <= 0:
                return "the token has no uses left (it was minted for single use)"
            record.uses_left -= 1
        return None


# --------------------------------------------------------------------------- who may mint


def origin_refusal(policy: AccessPolicy, request: web.Request, *, required: bool) -> str | None:
    """Why ``request``'s Origin may not use this endpoint (None: it may): it must be this server's
    own origin or an allowed one; ``required``: a request without Origin is refused too."""
    origin = request.headers.get("Origin")
    if origin is None:
        return "no Origin header: only this server's pages may use this endpoint" if required else None
    own = {f"{scheme}://{h}" for h in policy.own_hosts(request) for scheme in ("http", "https")}
    if origin.lower() in own | policy.allowed_origins:
        return None
    return (
        f"Origin {origin[:100]!r} may not use {request.path}: only this server's own pages may "
        "(start serve.py with --allow-origin URL to allow another)"
    )


class RateLimiter:
    """At most ``limit`` events per ``window_s`` per client (a sliding window)."""

    def __init__(
        self, limit: int, window_s: float, max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def take(self, client: str) -> float | None:
        """Record one event for ``client``; None if allowed, else the seconds until it would be."""
        now = self.clock()
        events = self._events.pop(client, None) or deque()
        while events and events[0] <= now - self.window_s:
            events.popleft()
        self._events[client] = events  # most recently seen last
        while len(self._events) > self.max_clients:
            self._events.popitem(last=False)
        if len(events) >= self.limit:
            return max(0.0, events[0] + self.window_s - now)
        events.append(now)
        return None


# --------------------------------------------------------------------------- providers


def _normalise_base(url: str, strip_version: bool) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not an http(s) base URL: {url!r}")
    path = parts.path.rstrip("/")
    if strip_version and path.endswith("/v1"):  # OpenAI SDKs' OPENAI_BASE_URL includes /v1
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def socket_base(http_base: str) -> str:
    """The ws(s):// form of an http(s):// base URL."""
    parts = urlsplit(http_base)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))


def socket_origin(http_base: str) -> str:
    parts = urlsplit(socket_base(http_base))
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class ProviderConfig:
    """Long-lived keys (None: mint from the emulation) and the providers' REST base URLs."""

    openai_key: str | None = None
    gemini_key: str | None = None
    openai_base: str = OPENAI_BASE
    gemini_base: str = GEMINI_BASE

    def __post_init__(self) -> None:
        object.__setattr__(self, "openai_base", _normalise_base(self.openai_base, strip_version=True))
        object.__setattr__(self, "gemini_base", _normalise_base(self.gemini_base, strip_version=False))

    def __repr__(self) -> str:  # never print a key
        keys = [p for p in PROVIDERS if self.key(p)]
        return f"ProviderConfig(keys for {keys}, openai_base={self.openai_base!r}, gemini_base={self.gemini_base!r})"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], openai_base: str | None = None, gemini_base: str | None = None
    ) -> ProviderConfig:
        """Keys from ``OPENAI_API_KEY`` / ``GEMINI_API_KEY``; bases from the arguments, else
        ``OPENAI_BASE_URL`` / ``GEMINI_BASE_URL`` (or js-genai's ``GOOGLE_GEMINI_BASE_URL``)."""
        return cls(
            openai_key=env.get("OPENAI_API_KEY") or None,
            gemini_key=env.get("GEMINI_API_KEY") or None,
            openai_base=openai_base or env.get("OPENAI_BASE_URL") or OPENAI_BASE,
            gemini_base=gemini_base or env.get("GEMINI_BASE_URL") or env.get("GOOGLE_GEMINI_BASE_URL") or GEMINI_BASE,
        )

    def key(self, provider: str) -> str | None:
        return self.openai_key if provider == "openai" else self.gemini_key

    def connect_src(self) -> tuple[str, ...]:
        """The providers' socket origins the pages must reach (only those with a key)."""
        out = []
        if self.openai_key:
            out.append(socket_origin(self.openai_base))
        if self.gemini_key:
            out.append(socket_origin(self.gemini_base))
        return tuple(out)


class MintError(Exception):
    """Minting failed; ``code`` and ``message`` are safe to show (no key, no provider message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _provider_code(body: Any) -> str:
    """The provider's error code (OpenAI ``error.code``/``type``, Google ``error.status``), if safe to show."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "unknown"
    for key in ("code", "status", "type"):
        value = error.get(key)
        if isinstance(value, str) and _CODE.fullmatch(value):
            return value
    return "unknown"


async def _post(url: str, headers: dict[str, str], body: dict[str, Any], who: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=PROVIDER_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, json=body, headers=headers, allow_redirects=False) as response,
        ):
            try:
                answer = await response.json(content_type=None)
            except (ValueError, aiohttp.ClientError):
                answer = None
            if response.status != 200:
                code = _provider_code(answer)
                raise MintError(502, "provider_error", f"{who} refused to mint a token: HTTP {response.status} {code}")
            if not isinstance(answer, dict):
                raise MintError(502, "bad_provider_response", f"{who} answered 200 without a JSON object")
            return answer
    except MintError:
        raise
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        origin = urlsplit(url)
        raise MintError(
            502,
            "provider_unreachable",
            f"could not reach {who} at {origin.scheme}://{origin.netloc}: {type(exc).__name__}",
        ) from None


async def mint_openai(config: ProviderConfig, model: str) -> tuple[str, float]:
    """A real client secret: ``(value, expires_at)``."""
    assert config.openai_key is not None
    body = {
        "expires_after": {"anchor": "created_at", "seconds": OPENAI_SECRET_S},
        "session": {"type": "realtime", "model": model},
    }
    headers = {"Authorization": f"Bearer {config.openai_key}"}
    answer = await _post(config.openai_base + "/v1/realtime/client_secrets", headers, body, "the OpenAI API")
    value, expires = answer.get("value"), answer.get("expires_at")
    if not isinstance(value, str) or not value.startswith("ek_") or not isinstance(expires, (int, float)):
        raise MintError(502, "bad_provider_response", "the OpenAI API answered without an ek_ value and expires_at")
    return value, float(expires)


async def mint_gemini(config: ProviderConfig, model: str) -> tuple[str, float]:
    """A real single-use auth token: ``(name, new_session_expire_time)``. Only the model is locked
    (``fieldMask: "model"``, js-genai's ``lockAdditionalFields: []``): the page's setup (tools,
    transcription...) is still honoured."""
    assert config.gemini_key is not None
    now = time.time()
    new_session = now + GEMINI_NEW_SESSION_S
    body = {
        "uses": 1,
        "expireTime": rfc3339(now + GEMINI_EXPIRE_S),
        "newSessionExpireTime": rfc3339(new_session),
        "bidiGenerateContentSetup": {"model": gemini_model_name(model)},
        "fieldMask": "model",
    }
    headers = {"x-goog-api-key": config.gemini_key}
    answer = await _post(config.gemini_base + "/v1alpha/auth_tokens", headers, body, "the Gemini API")
    name = answer.get("name")
    if not isinstance(name, str) or not name.startswith("auth_tokens/"):
        raise MintError(502, "bad_provider_response", "the Gemini API answered without an auth_tokens/ name")
    return name, new_session


def gemini_model_name(model: str) -> str:
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


# --------------------------------------------------------------------------- the endpoint


@dataclass
class TokenService:
    """What ``POST /session`` needs: who may ask, how often, and where tokens come from."""

    policy: AccessPolicy
    providers: ProviderConfig
    store: TokenStore
    limiter: RateLimiter


TOKEN_SERVICE = web.AppKey("token_service", TokenService)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers={**NO_STORE, **(headers or {})}
    )


def _passthrough(query: Mapping[str, str]) -> dict[str, str] | str:
    """The scenario parameters to carry into an emulated socket's URL, or why they are refused."""
    extra = {k: v for k, v in query.items() if k not in RESERVED_PARAMS}
    if len(extra) > MAX_PASSTHROUGH:
        return f"{len(extra)} parameters, at most {MAX_PASSTHROUGH}"
    for name, value in extra.items():
        if not _PARAM_NAME.fullmatch(name):
            return f"parameter name {name[:40]!r} is not an identifier of at most 32 characters"
        if len(value) > MAX_PARAM_CHARS:
            return f"{name}: {len(value)} characters, at most {MAX_PARAM_CHARS}"
    return extra


def emulated_url(request: web.Request, provider: str, model: str, params: Mapping[str, str]) -> str:
    scheme = "wss" if request.scheme == "https" else "ws"
    if provider == "openai":
        return f"{scheme}://{request.host}/openai/v1/realtime?" + urlencode({"model": model, **params})
    query = urlencode(dict(params))
    return f"{scheme}://{request.host}/gemini{GEMINI_TOKEN_PATH}" + (f"?{query}" if query else "")


async def session_endpoint(request: web.Request) -> web.Response:
    """``POST /session?provider=openai|gemini``: see the module docstring."""
    service = request.app[TOKEN_SERVICE]
    if request.method != "POST":
        return json_error(405, "method_not_allowed", "POST /session?provider=openai|gemini", {"Allow": "POST"})
    refusal = origin_refusal(service.policy, request, required=True)
    if refusal is not None:
        return json_error(403, "forbidden_origin", refusal)
    wait = service.limiter.take(request.remote or "unknown")
    if wait is not None:
        limit, window = service.limiter.limit, service.limiter.window_s
        seconds = max(1, math.ceil(wait))
        return json_error(
            429,
            "rate_limited",
            f"at most {limit} tokens per {window:g} s per client; try again in {seconds} s",
            {"Retry-After": str(seconds)},
        )
    provider = request.query.get("provider", "")
    if provider not in PROVIDERS:
        return json_error(400, "bad_provider", f"provider={provider[:40]!r}: expected openai or gemini")
    default = OPENAI_DEFAULT_MODEL if provider == "openai" else GEMINI_DEFAULT_MODEL
    model = request.query.get("model") or default
    if not _MODEL.fullmatch(model):
        return json_error(400, "bad_model", "model: 1 to 100 letters, digits, '.', '_', '-' or '/'")
    params = _passthrough(request.query)
    if isinstance(params, str):
        return json_error(400, "bad_params", params)
    key = service.providers.key(provider)
    try:
        if key:
            if provider == "openai":
                token, expires_at = await mint_openai(service.providers, model)
                url = socket_base(service.providers.openai_base) + "/v1/realtime?" + urlencode({"model": model})
            else:
                token, expires_at = await mint_gemini(service.providers, model)
                url = socket_base(service.providers.gemini_base) + GEMINI_TOKEN_PATH
        elif provider == "openai":
            token, record = service.store.mint_openai(model, session={"type": "realtime", "model": model})
            expires_at, url = record.new_session_until, emulated_url(request, provider, model, params)
        else:
            token, record = service.store.mint_gemini(gemini_model_name(model), setup={"model": model})
            expires_at, url = record.new_session_until, emulated_url(request, provider, model, params)
    except MintError as exc:
        log.warning("minting a %s token failed: %s", provider, exc.message)
        return json_error(exc.status, exc.code, exc.message)
    log.info("minted a %s token (%s)", provider, "from the provider" if key else "emulated")
    body = {
        "token": token,
        "url": url,
        "expires_at": int(expires_at),
        "provider": provider,
        "model": model,
        "emulated": not key,
    }
    return web.json_response(body, headers=NO_STORE)


def redact_query(params: Mapping[str, str]) -> dict[str, str]:
    """Query parameters with credentials replaced (for /stats and logs)."""
    return {k: ("[redacted]" if k in ("key", "access_token") else v) for k, v in params.items()}


_CREDENTIAL = re.compile(r"([?&](?:key|access_token)=)[^&\s\"]+")


class RedactCredentials(logging.Filter):
    """Replaces ``?key=`` / ``?access_token=`` values in log lines: Gemini's socket URL carries
    its credential, and an access log (aiohttp's, when a runner enables it) prints request lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and ("key=" in record.msg or "access_token=" in record.msg):
            record.msg = _CREDENTIAL.sub(r"\1[redacted]", record.msg)
        return True


def redact_access_log() -> None:
    """Install ``RedactCredentials`` on aiohttp's access logger (once)."""
    access = logging.getLogger("aiohttp.access")
    if not any(isinstance(f, RedactCredentials) for f in access.filters):
        access.addFilter(RedactCredentials())

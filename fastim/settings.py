"""Load and validate the node's settings once: flags > environment > settings.ini > defaults."""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

ENV_PREFIX = "FASTIM_"
DEFAULT_CONFIG_PATH = "settings.ini"
DEFAULT_SOURCE = "built-in default"
# backend = sqlite without a database_url: a file in the working directory.
DEFAULT_SQLITE_URL = "sqlite:///fastim.db"


class SettingsError(Exception):
    """A setting that cannot be used; ``str()`` is one line naming key, value and source."""


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    workers: int
    allowed_origins: tuple[str, ...]
    open_paths: tuple[str, ...]
    log_format: str
    log_level: str
    protected_mode: bool
    max_connections: int
    max_connections_per_ip: int
    header_timeout: float
    body_timeout: float
    max_body_bytes: int
    trusted_proxies: tuple[str, ...]


@dataclass(frozen=True)
class StorageSettings:
    backend: str
    database_url: str
    redis_url: str
    redis_cluster: str
    redis_sentinels: str
    redis_sentinel_master: str
    redis_wait_replicas: int
    redis_mode: str  # derived: "single", "sentinel" or "cluster"


@dataclass(frozen=True)
class ImSettings:
    login_auth: bool
    auto_join: bool
    message_timeout: int
    list_num: int
    recall_time_limit: int
    group_list_update_rate: float
    token_ttl: int
    max_message_bytes: int
    rate_limit: float
    rate_burst: int
    history_max: int
    max_pending_bytes: int
    coalescing_window_ms: int
    ping_interval: float
    ping_timeout: float
    history_page_max: int
    max_groups_per_user: int
    recover_max: int
    presence_events: bool


@dataclass(frozen=True)
class BrokerSettings:
    backend: str  # "memory" or "redis": as [broker] backend says, else what the storage implies


@dataclass(frozen=True)
class AuthSettings:
    login_failures_per_ip: int
    login_failures_per_user: int
    login_failure_window: float
    password_logins: bool
    jwt_secret: str
    jwt_public_key_file: str
    jwt_audience: str
    jwt_issuer: str
    jwt_leeway: float


@dataclass(frozen=True)
class ApiSettings:
    key: str
    broadcast_max: int


@dataclass(frozen=True)
class HooksSettings:
    publish_url: str
    timeout: float
    fail: str
    max_in_flight: int


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    storage: StorageSettings
    broker: BrokerSettings
    im: ImSettings
    auth: AuthSettings
    api: ApiSettings
    hooks: HooksSettings

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The nested plain dict that ``container.config.from_dict`` takes."""
        return dataclasses.asdict(self)


class _Choice(fields.String):
    """A case-insensitive choice among a few lower-case words."""

    def __init__(self, choices: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(validate=validate.OneOf(choices), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip().lower()


class _Flag(fields.Boolean):
    """0/1, true/false, yes/no, on/off in any case; nothing else, so typos are caught."""

    truthy = {"1", "true", "yes", "on"}
    falsy = {"0", "false", "no", "off"}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = value.strip().lower()
        return super()._deserialize(value, attr, data, **kwargs)


class _Origins(fields.String):
    """A comma-separated list of origins (``scheme://host[:port]``), or ``*`` for any."""

    default_error_messages = {
        "empty": "Give at least one origin, or * for any.",
        "origin": "{origin!r} is not an origin: use scheme://host[:port] without a path, or *.",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        origins = tuple(part.strip().lower() for part in text.split(",") if part.strip())
        if not origins:
            raise self.make_error("empty")
        for origin in origins:
            scheme, sep, host = origin.partition("://")
            if origin != "*" and (not sep or not scheme or not host or "/" in host or " " in host):
                raise self.make_error("origin", origin=origin)
        return origins


DEFAULT_OPEN_PATHS = ("/user/login", "/test/websocket", "/healthz", "/readyz", "/metrics", "/openapi.json")


class _Paths(fields.String):
    """A comma-separated list of URL paths, each starting with ``/``."""

    default_error_messages = {"path": "{path!r} is not a path: each must start with /."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        paths = tuple(part.strip() for part in text.split(",") if part.strip())
        for path in paths:
            if not path.startswith("/") or " " in path:
                raise self.make_error("path", path=path)
        return paths


class _Networks(fields.String):
    """A comma-separated list of IP addresses or CIDR networks (IPv4 or IPv6), normalized (``10.0.0.0/8``)."""

    default_error_messages = {"network": "{network!r} is not an IP address or a CIDR network (10.0.0.0/8, fd00::/8)."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        networks = []
        for part in (part.strip() for part in text.split(",")):
            if not part:
                continue
            try:
                networks.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise self.make_error("network", network=part) from None
        return tuple(networks)


def _non_negative(**kwargs: Any) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=0), **kwargs)


def _positive(**kwargs: Any) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=1), **kwargs)


def _positive_float(**kwargs: Any) -> fields.Float:
    return fields.Float(allow_nan=False, validate=validate.Range(min=0, min_inclusive=False), **kwargs)


def _seconds_at_least_one(**kwargs: Any) -> fields.Float:
    return fields.Float(allow_nan=False, validate=validate.Range(min=1, max=86400), **kwargs)


class ServerSchema(Schema):
    host = fields.String(
        load_default="127.0.0.1",
        validate=validate.Regexp(r"^\S+$", error="Must be a host name or address, without spaces."),
    )
    port = fields.Integer(load_default=9000, validate=validate.Range(min=1, max=65535))
    # One process per core is the useful maximum; 64 catches a typo without limiting real machines.
    workers = fields.Integer(load_default=1, validate=validate.Range(min=1, max=64))
    allowed_origins = _Origins(load_default=("*",))
    open_paths = _Paths(load_default=DEFAULT_OPEN_PATHS)
    log_format = _Choice(("text", "json"), load_default="text")
    log_level = _Choice(("debug", "info", "warning", "error"), load_default="info")
    # Like Redis: a node whose logins are open refuses to listen beyond loopback unless this is 0.
    protected_mode = _Flag(load_default=True)
    # 0: as many as the open-files limit allows, less a reserve for Redis, logs and files.
    max_connections = _non_negative(load_default=0)
    # 0: no per-address limit. Behind a proxy, list it in trusted_proxies so that its clients are counted.
    max_connections_per_ip = _non_negative(load_default=0)
    # A request head (or the next one on a kept-alive connection) must be complete within this.
    header_timeout = _positive_float(load_default=10.0)
    body_timeout = _positive_float(load_default=30.0)
    # Every API form fits in a few KB; bigger bodies are refused from their headers (413).
    max_body_bytes = _positive(load_default=65536)
    # Proxies (nginx) whose X-Forwarded-For / X-Real-IP name the client; from any other peer they are ignored.
    trusted_proxies = _Networks(load_default=())

    @post_load
    def make(self, data: dict, **kwargs: Any) -> ServerSettings:
        return ServerSettings(**data)


_ADDRESSES = r"^(\s*[^\s,:]+:\d{1,5}\s*(,\s*[^\s,:]+:\d{1,5}\s*)*)?$"
_ADDRESSES_ERROR = "Must be HOST:PORT[,HOST:PORT...]."


class StorageSchema(Schema):
    backend = _Choice(("memory", "redis", "sqlite", "postgres"), load_default="memory")
    # The database of backend = sqlite or postgres (SQLite: a file, created when missing).
    database_url = fields.String(
        load_default="",
        validate=validate.Regexp(
            r"^((sqlite|postgres|postgresql)://\S*)?$", error="Must be a sqlite:// or postgresql:// URL."
        ),
    )
    redis_url = fields.String(
        load_default="redis://127.0.0.1:6379/3",
        validate=validate.Regexp(
            r"^(redis|rediss|unix)://\S+$",
            error="Must be a redis://, rediss:// or unix:// URL.",
        ),
    )

    # HOST:PORT[,HOST:PORT...]: the nodes asked for the cluster's slot map, or the sentinels.
    redis_cluster = fields.String(load_default="", validate=validate.Regexp(_ADDRESSES, error=_ADDRESSES_ERROR))
    redis_sentinels = fields.String(load_default="", validate=validate.Regexp(_ADDRESSES, error=_ADDRESSES_ERROR))
    redis_sentinel_master = fields.String(
        load_default="", validate=validate.Regexp(r"^[^\s]*$", error="Must be a name without spaces.")
    )
    redis_wait_replicas = _non_negative(load_default=0)

    @validates_schema
    def check_topology(self, data: dict, **kwargs: Any) -> None:
        if data.get("redis_cluster") and data.get("redis_sentinels"):
            raise ValidationError("Give a Redis Cluster or Sentinel, not both.", "redis_sentinels")
        if data.get("redis_sentinels") and not data.get("redis_sentinel_master"):
            raise ValidationError("Sentinel needs the master's name too.", "redis_sentinel_master")

    @post_load
    def make(self, data: dict, **kwargs: Any) -> StorageSettings:
        mode = "cluster" if data["redis_cluster"] else "sentinel" if data["redis_sentinels"] else "single"
        if data["backend"] == "sqlite" and not data["database_url"]:
            data["database_url"] = DEFAULT_SQLITE_URL
        return StorageSettings(**data, redis_mode=mode)


class BrokerSchema(Schema):
    # "": redis with backend = redis, memory otherwise (one node).
    backend = _Choice(("", "memory", "redis"), load_default="")

    @post_load
    def make(self, data: dict, **kwargs: Any) -> BrokerSettings:
        return BrokerSettings(**data)


class ImSchema(Schema):
    # Defaults mirror fast-im's application.yml (SPEC §2) plus our own limits.
    login_auth = _Flag(load_default=False)
    auto_join = _Flag(load_default=True)
    message_timeout = _positive(load_default=604800)
    list_num = _non_negative(load_default=50)
    recall_time_limit = _non_negative(load_default=120)
    group_list_update_rate = _positive_float(load_default=1.0)
    token_ttl = _positive(load_default=86400)
    max_message_bytes = _positive(load_default=4096)
    rate_limit = _positive_float(load_default=10.0)
    rate_burst = _positive(load_default=20)
    history_max = _non_negative(load_default=0)
    max_pending_bytes = _positive(load_default=1048576)
    # The Hub's adaptive window is as long as a busy group's last fan-out took, never longer than
    # this; 15 ms keeps a quiet room's p99 within issue 7's 20 ms. 1 s would be a broken node.
    coalescing_window_ms = fields.Integer(load_default=15, validate=validate.Range(min=0, max=1000))
    # Browsers' and proxies' idle timeouts are 30-60 s; a ping every 25 s keeps a socket through them.
    ping_interval = _seconds_at_least_one(load_default=25.0)
    ping_timeout = _seconds_at_least_one(load_default=20.0)
    # The most messages one history request returns; larger ranges are clipped and the answer says so.
    history_page_max = _positive(load_default=200)
    # 0: no limit. A group-list socket reads every group of its user on each push.
    max_groups_per_user = _non_negative(load_default=1000)
    # How far back a resuming client (or a node repairing a gap) may reach, in events; the newest
    # this many recall events are kept per group for it. 1000 covers a minute of a busy room.
    recover_max = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100_000))
    # 1: chat sockets get {"event":"join"|"leave"} when a user's first socket opens or last one closes.
    presence_events = _Flag(load_default=False)

    @post_load
    def make(self, data: dict, **kwargs: Any) -> ImSettings:
        return ImSettings(**data)


class AuthSchema(Schema):
    # Failed /user/login attempts counted per client address and per userId over the window;
    # past either limit further attempts answer 429 until the window has passed. 0: no limit.
    login_failures_per_ip = _non_negative(load_default=30)
    login_failures_per_user = _non_negative(load_default=10)
    login_failure_window = _positive_float(load_default=300.0)
    # 0: /user/login is off (JWTs only), so the default authenticator no longer opens logins.
    password_logins = _Flag(load_default=True)
    # JWT connection tokens: an HS256 secret, or a PEM public key file (RS256/ES256); not both.
    jwt_secret = fields.String(load_default="")
    jwt_public_key_file = fields.String(load_default="")
    jwt_audience = fields.String(load_default="")
    jwt_issuer = fields.String(load_default="")
    jwt_leeway = fields.Float(allow_nan=False, load_default=0.0, validate=validate.Range(min=0, max=3600))

    @validates_schema
    def one_key(self, data: dict, **kwargs: Any) -> None:
        if data.get("jwt_secret") and data.get("jwt_public_key_file"):
            raise ValidationError("Give jwt_secret or jwt_public_key_file, not both.", "jwt_public_key_file")
        path = data.get("jwt_public_key_file")
        if path and not os.path.isfile(path):
            raise ValidationError("No such file.", "jwt_public_key_file")

    @post_load
    def make(self, data: dict, **kwargs: Any) -> AuthSettings:
        return AuthSettings(**data)


class ApiSchema(Schema):
    # The server API (/api/*) is served only when this key is set; callers send "Authorization: apikey <key>".
    key = fields.String(load_default="", validate=validate.Regexp(r"^(\S{16,})?$",
                                                                   error="Must be at least 16 characters, no spaces."))
    # The most groups one /api/broadcast call may name.
    broadcast_max = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100_000))

    @post_load
    def make(self, data: dict, **kwargs: Any) -> ApiSettings:
        return ApiSettings(**data)


class HooksSchema(Schema):
    # The application's URL that reviews every chat send before it is stored; empty: no hook.
    publish_url = fields.String(
        load_default="", validate=validate.Regexp(r"^(https?://\S+)?$", error="Must be an http:// or https:// URL.")
    )
    timeout = fields.Float(allow_nan=False, load_default=2.0, validate=validate.Range(min=0.01, max=60))
    # closed: a send is refused while the hook fails; open: it is stored unreviewed.
    fail = _Choice(("closed", "open"), load_default="closed")
    # Hook requests in flight at once per node; sends past this are treated as a hook failure.
    max_in_flight = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100_000))

    @post_load
    def make(self, data: dict, **kwargs: Any) -> HooksSettings:
        return HooksSettings(**data)


class SettingsSchema(Schema):
    server = fields.Nested(ServerSchema, required=True)
    storage = fields.Nested(StorageSchema, required=True)
    broker = fields.Nested(BrokerSchema, required=True)
    im = fields.Nested(ImSchema, required=True)
    auth = fields.Nested(AuthSchema, required=True)
    api = fields.Nested(ApiSchema, required=True)
    hooks = fields.Nested(HooksSchema, required=True)

    @post_load
    def make(self, data: dict, **kwargs: Any) -> Settings:
        return Settings(**data)


def known_keys() -> dict[str, tuple[str, ...]]:
    """Every section and its keys, in the order of settings.ini."""
    return {
        name: tuple(field.schema.fields)  # type: ignore[attr-defined]
        for name, field in SettingsSchema().fields.items()
    }


# The flags of `fastim serve` not named after their key.
_FLAG_NAMES = {("broker", "backend"): "--broker", ("storage", "redis_sentinels"): "--redis-sentinel"}

# (section, key) -> (raw value, where it came from)
_Raw = dict[tuple[str, str], tuple[str, str]]


def load_settings(
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, str], str] | None = None,
) -> Settings:
    """Read, merge and validate the settings; raise :class:`SettingsError` on the first misuse.

    ``config_path`` None means ``./settings.ini`` when it exists, else defaults only.
    ``environ`` defaults to ``os.environ``; only ``FASTIM_<SECTION>_<KEY>`` variables
    whose section is known are read. ``overrides`` are the command-line flags, keyed
    by (section, key); flags are named after their key (``--redis-url``).
    """
    keys = known_keys()
    raw: _Raw = {}
    raw.update(_from_file(config_path, keys))
    raw.update(_from_environ(os.environ if environ is None else environ, keys))
    raw.update(_from_overrides(overrides or {}, keys))
    return _validate(raw, keys)


def _from_file(config_path: str | None, keys: dict[str, tuple[str, ...]]) -> _Raw:
    if config_path is None:
        if not os.path.isfile(DEFAULT_CONFIG_PATH):
            return {}
        config_path = DEFAULT_CONFIG_PATH
    elif not os.path.exists(config_path):
        raise SettingsError(f"config file not found: {config_path}")
    # No [DEFAULT] magic: a section literally named DEFAULT is just an unknown section.
    parser = configparser.ConfigParser(
        inline_comment_prefixes=(";", "#"), interpolation=None, default_section="\0"
    )
    try:
        with open(config_path, encoding="utf-8") as file:
            parser.read_file(file)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise SettingsError(f"cannot read config file {config_path}: {_one_line(exc)}") from exc
    raw: _Raw = {}
    for section in parser.sections():
        if section not in keys:
            raise SettingsError(
                f"unknown section [{section}] in {config_path}{_suggest(section, keys)}"
            )
        for key, value in parser.items(section):
            if key not in keys[section]:
                raise SettingsError(
                    f"unknown setting [{section}] {key} in {config_path}"
                    f"{_suggest(key, keys[section])}"
                )
            raw[section, key] = (value, config_path)
    return raw


def _from_environ(environ: Mapping[str, str], keys: dict[str, tuple[str, ...]]) -> _Raw:
    raw: _Raw = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
        if section not in keys:
            continue  # FASTIM_REQUIRE_REDIS and friends belong to someone else
        if key not in keys[section]:
            raise SettingsError(
                f"unknown setting [{section}] {key} (from {name}){_suggest(key, keys[section])}"
            )
        raw[section, key] = (value, name)
    return raw


def _from_overrides(
    overrides: Mapping[tuple[str, str], str], keys: dict[str, tuple[str, ...]]
) -> _Raw:
    raw: _Raw = {}
    for (section, key), value in overrides.items():
        if key not in keys.get(section, ()):
            raise SettingsError(f"unknown setting [{section}] {key} (from command line)")
        raw[section, key] = (value, _FLAG_NAMES.get((section, key), "--" + key.replace("_", "-")))
    return raw


def _validate(raw: _Raw, keys: dict[str, tuple[str, ...]]) -> Settings:
    data: dict[str, dict[str, str]] = {section: {} for section in keys}
    for (section, key), (value, _) in raw.items():
        data[section][key] = value
    try:
        settings = SettingsSchema().load(data)
    except ValidationError as exc:
        errors = exc.messages if isinstance(exc.messages, dict) else {}
        problems = [
            _describe(section, key, raw.get((section, key), ("", DEFAULT_SOURCE)), errors[section][key])
            for section in keys
            for key in keys[section]
            if isinstance(errors.get(section), dict) and key in errors[section]
        ]
        raise SettingsError("; ".join(problems) or _one_line(exc)) from exc
    settings = _backends(settings, raw)
    _check_workers(settings, raw)
    return settings


def _backends(settings: Settings, raw: _Raw) -> Settings:
    """The storage and broker backends, completed and checked together."""
    storage = settings.storage
    if storage.redis_mode != "single" and storage.backend == "memory":
        # A Redis Cluster or Sentinel given means Redis, unless memory was asked for in so many words.
        topology = "redis_cluster" if storage.redis_mode == "cluster" else "redis_sentinels"
        if ("storage", "backend") in raw:
            raise _invalid(raw, "storage", "backend", f"[storage] {topology} is set, which needs the redis backend")
        storage = dataclasses.replace(storage, backend="redis")
    broker = settings.broker.backend or ("redis" if storage.backend == "redis" or storage.redis_mode != "single"
                                         else "memory")
    if storage.backend == "postgres" and not storage.database_url.startswith(("postgres://", "postgresql://")):
        raise _invalid(raw, "storage", "database_url", "[storage] backend = postgres needs a postgresql:// URL")
    if storage.backend == "sqlite" and not storage.database_url.startswith("sqlite://"):
        raise _invalid(raw, "storage", "database_url", "[storage] backend = sqlite needs a sqlite:/// URL")
    if storage.backend == "redis" and broker == "memory":
        raise _invalid(raw, "broker", "backend", "Redis storage announces every event on Redis: "
                                                 "[storage] backend = redis needs the redis broker")
    if storage.backend == "memory" and broker == "redis":
        raise _invalid(raw, "broker", "backend", "in-memory storage is one node's own: other nodes "
                                                 "could not read what a redis broker announced")
    return dataclasses.replace(settings, storage=storage, broker=BrokerSettings(broker))


def _check_workers(settings: Settings, raw: _Raw) -> None:
    if settings.server.workers <= 1:
        return
    if settings.storage.backend == "memory":
        reason = ("several workers need [storage] backend = redis or postgres; in-memory workers would not see "
                  "each other's messages")
    elif settings.storage.backend == "sqlite":
        reason = "several workers need a shared storage; SQLite is one process's (use postgres or redis)"
    elif settings.broker.backend == "memory":
        reason = "several workers need [broker] backend = redis; a memory broker reaches one process"
    else:
        return
    raise _invalid(raw, "server", "workers", reason)


def _invalid(raw: _Raw, section: str, key: str, reason: str) -> SettingsError:
    value, source = raw.get((section, key), ("", DEFAULT_SOURCE))
    if (section, key) in SECRET_KEYS and value:
        value = "***"
    return SettingsError(f"invalid setting [{section}] {key} = {value!r} (from {source}): {reason}")


# Settings whose value never appears in a message (an error names the key and the source only).
SECRET_KEYS = frozenset({("auth", "jwt_secret"), ("api", "key")})


def _describe(section: str, key: str, given: tuple[str, str], messages: Any) -> str:
    value, source = given
    if (section, key) in SECRET_KEYS and value:
        value = "***"
    text = " ".join(messages) if isinstance(messages, list) else str(messages)
    return f"invalid setting [{section}] {key} = {value!r} (from {source}): {_one_line(text)}"


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _one_line(error: object) -> str:
    return " ".join(str(error).split())

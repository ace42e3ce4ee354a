"""Settings: defaults, the file, the environment and flags, in that order of strength."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from fastim.settings import Settings, SettingsError, known_keys, load_settings

REPO_SETTINGS = Path(__file__).resolve().parents[2] / "settings.ini"

DEFAULTS = {
    "server": {
        "host": "127.0.0.1",
        "port": 9000,
        "workers": 1,
        "allowed_origins": ("*",),
        "open_paths": ("/user/login", "/test/websocket", "/healthz", "/readyz", "/metrics", "/openapi.json"),
        "log_format": "text",
        "log_level": "info",
        "protected_mode": True,
        "max_connections": 0,
        "max_connections_per_ip": 0,
        "header_timeout": 10.0,
        "body_timeout": 30.0,
        "max_body_bytes": 65536,
        "trusted_proxies": (),
    },
    "storage": {
        "backend": "memory",
        "database_url": "",
        "redis_url": "redis://127.0.0.1:6379/3",
        "redis_cluster": "",
        "redis_sentinels": "",
        "redis_sentinel_master": "",
        "redis_wait_replicas": 0,
        "redis_mode": "single",
    },
    "broker": {"backend": "memory"},
    "im": {
        "login_auth": False,
        "auto_join": True,
        "message_timeout": 604800,
        "list_num": 50,
        "recall_time_limit": 120,
        "group_list_update_rate": 1.0,
        "token_ttl": 86400,
        "max_message_bytes": 4096,
        "rate_limit": 10.0,
        "rate_burst": 20,
        "history_max": 0,
        "max_pending_bytes": 1048576,
        "coalescing_window_ms": 15,
        "ping_interval": 25.0,
        "ping_timeout": 20.0,
        "history_page_max": 200,
        "max_groups_per_user": 1000,
        "recover_max": 1000,
        "presence_events": False,
    },
    "auth": {
        "login_failures_per_ip": 30,
        "login_failures_per_user": 10,
        "login_failure_window": 300.0,
        "password_logins": True,
        "jwt_secret": "",
        "jwt_public_key_file": "",
        "jwt_audience": "",
        "jwt_issuer": "",
        "jwt_leeway": 0.0,
    },
    "api": {"key": "", "broadcast_max": 1000},
    "hooks": {"publish_url": "", "timeout": 2.0, "fail": "closed", "max_in_flight": 1000},
}


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    """Run each test where no settings.ini lies around, unless the test writes one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_ini(directory: Path, text: str, name: str = "settings.ini") -> str:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(config_path=None, environ=None, overrides=None) -> Settings:
    return load_settings(config_path, environ or {}, overrides or {})


def error_of(**kwargs) -> str:
    with pytest.raises(SettingsError) as info:
        load(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and the shipped file ---------------------------------------------


def test_defaults_without_any_file():
    assert load().as_dict() == DEFAULTS


def test_as_dict_is_plain_nested_dict_for_the_container():
    data = load().as_dict()
    assert set(data) == {"server", "storage", "broker", "im", "auth", "api", "hooks"}
    assert data["im"]["list_num"] == 50
    assert data["storage"]["backend"] == "memory"


def test_settings_are_frozen():
    settings = load()
    with pytest.raises(AttributeError):
        settings.server.port = 1  # type: ignore[misc]


def test_shipped_settings_ini_lists_every_key_with_its_default():
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    parser.read(REPO_SETTINGS, encoding="utf-8")
    assert {s: tuple(parser[s]) for s in parser.sections()} == known_keys()
    assert load(str(REPO_SETTINGS)) == load()


def test_settings_ini_in_working_directory_is_read_by_default(empty_cwd):
    write_ini(empty_cwd, "[server]\nport = 9100\n")
    assert load().server.port == 9100


# --- sources and precedence ----------------------------------------------------


def test_file_values_with_inline_comments_and_any_key_case(empty_cwd):
    path = write_ini(
        empty_cwd,
        "[server]\nHOST = 0.0.0.0 ; all interfaces\nport = 9001 # inline\n"
        "allowed_origins = https://a.example, http://b.example:8080\n"
        "[storage]\nbackend = redis\nredis_url = rediss://cache.example:6380/1\n"
        "[im]\nlist_num = 0\ngroup_list_update_rate = 0.25\nhistory_max = 1000\n",
        name="custom.ini",
    )
    settings = load(path)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 9001
    assert settings.server.allowed_origins == ("https://a.example", "http://b.example:8080")
    assert settings.storage.backend == "redis"
    assert settings.storage.redis_url == "rediss://cache.example:6380/1"
    assert settings.im.list_num == 0
    assert settings.im.group_list_update_rate == 0.25
    assert settings.im.history_max == 1000
    assert settings.im.token_ttl == 86400  # untouched keys keep their default


def test_environment_beats_file(empty_cwd):
    path = write_ini(empty_cwd, "[server]\nport = 9001\n[im]\nlist_num = 5\n")
    settings = load(path, environ={"FASTIM_SERVER_PORT": "9002"})
    assert settings.server.port == 9002
    assert settings.im.list_num == 5


def test_flag_beats_environment_and_file(empty_cwd):
    path = write_ini(empty_cwd, "[storage]\nbackend = redis\n")
    settings = load(
        path,
        environ={"FASTIM_STORAGE_BACKEND": "redis", "FASTIM_SERVER_PORT": "9002"},
        overrides={("storage", "backend"): "memory", ("server", "port"): "9003"},
    )
    assert settings.storage.backend == "memory"
    assert settings.server.port == 9003


def test_environment_variables_of_other_sections_are_ignored():
    environ = {"FASTIM_REQUIRE_REDIS": "1", "FASTIM_": "x", "PATH": "/bin", "FASTIMX_IM_LIST_NUM": "a"}
    assert load(environ=environ) == load()


def test_environment_variable_names_every_key():
    environ = {"FASTIM_IM_LOGIN_AUTH": "1", "FASTIM_STORAGE_REDIS_URL": "redis://127.0.0.1:6379/3"}
    settings = load(environ=environ)
    assert settings.im.login_auth is True


def test_os_environ_is_the_default_environment(monkeypatch):
    monkeypatch.setenv("FASTIM_IM_LIST_NUM", "7")
    assert load_settings(None, None, None).im.list_num == 7


# --- booleans and choices ------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "true", "True", "yes", "ON", " on "])
def test_truthy_booleans(text):
    assert load(environ={"FASTIM_IM_LOGIN_AUTH": text}).im.login_auth is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "no", "off"])
def test_falsy_booleans(text):
    assert load(environ={"FASTIM_IM_AUTO_JOIN": text}).im.auto_join is False


def test_choices_are_case_insensitive():
    settings = load(environ={"FASTIM_STORAGE_BACKEND": "Redis", "FASTIM_SERVER_LOG_LEVEL": "DEBUG"})
    assert settings.storage.backend == "redis"
    assert settings.server.log_level == "debug"


# --- bad values: one line naming key, value and source ----------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("server", "port", "abc", "Not a valid integer."),
        ("server", "port", "0", "Must be greater than or equal to 1"),
        ("server", "port", "65536", "less than or equal to 65535"),
        ("server", "host", "", "Must be a host name"),
        ("server", "allowed_origins", "https://a.example/", "is not an origin"),
        ("server", "allowed_origins", " , ", "at least one origin"),
        ("server", "open_paths", "/user/login, healthz", "is not a path"),
        ("server", "log_format", "xml", "Must be one of: text, json."),
        ("server", "log_level", "verbose", "Must be one of: debug, info, warning, error."),
        ("storage", "backend", "nosuch", "Must be one of: memory, redis, sqlite, postgres."),
        ("storage", "database_url", "mysql://x/y", "Must be a sqlite:// or postgresql:// URL."),
        ("storage", "redis_url", "http://127.0.0.1:6379", "redis://, rediss:// or unix://"),
        ("storage", "redis_cluster", "127.0.0.1", "Must be HOST:PORT[,HOST:PORT...]."),
        ("storage", "redis_sentinels", "a:1,,b:2", "Must be HOST:PORT[,HOST:PORT...]."),
        ("storage", "redis_wait_replicas", "-1", "greater than or equal to 0"),
        ("im", "login_auth", "maybe", "Not a valid boolean."),
        ("im", "auto_join", "2", "Not a valid boolean."),
        ("im", "message_timeout", "0", "greater than or equal to 1"),
        ("im", "list_num", "-1", "greater than or equal to 0"),
        ("im", "list_num", "1.5", "Not a valid integer."),
        ("im", "recall_time_limit", "-5", "greater than or equal to 0"),
        ("im", "group_list_update_rate", "0", "Must be greater than 0."),
        ("im", "token_ttl", "0", "greater than or equal to 1"),
        ("im", "max_message_bytes", "0", "greater than or equal to 1"),
        ("im", "rate_limit", "nan", "not permitted"),
        ("im", "rate_limit", "-1", "Must be greater than 0."),
        ("im", "rate_burst", "0", "greater than or equal to 1"),
        ("im", "history_max", "-1", "greater than or equal to 0"),
        ("im", "max_pending_bytes", "0", "greater than or equal to 1"),
        ("im", "coalescing_window_ms", "-1", "greater than or equal to 0 and less than or equal to 1000"),
        ("im", "coalescing_window_ms", "1001", "less than or equal to 1000"),
        ("server", "protected_mode", "perhaps", "Not a valid boolean."),
        ("server", "max_connections", "-1", "greater than or equal to 0"),
        ("server", "max_connections_per_ip", "x", "Not a valid integer."),
        ("server", "header_timeout", "0", "Must be greater than 0."),
        ("server", "body_timeout", "inf", "not permitted"),
        ("server", "max_body_bytes", "0", "greater than or equal to 1"),
        ("im", "ping_interval", "0.5", "greater than or equal to 1"),
        ("im", "ping_timeout", "86401", "less than or equal to 86400"),
        ("im", "history_page_max", "0", "greater than or equal to 1"),
        ("im", "max_groups_per_user", "-1", "greater than or equal to 0"),
        ("im", "recover_max", "0", "greater than or equal to 1 and less than or equal to 100000"),
        ("auth", "login_failures_per_ip", "-1", "greater than or equal to 0"),
        ("auth", "login_failures_per_user", "ten", "Not a valid integer."),
        ("auth", "login_failure_window", "0", "Must be greater than 0."),
        ("auth", "jwt_leeway", "-1", "greater than or equal to 0"),
        ("auth", "jwt_public_key_file", "/nonexistent/key.pem", "No such file."),
        ("hooks", "publish_url", "ftp://x", "Must be an http:// or https:// URL."),
        ("hooks", "fail", "maybe", "Must be one of"),
        ("hooks", "timeout", "0", "greater than or equal to 0.01"),
        ("api", "broadcast_max", "0", "greater than or equal to 1"),
    ],
)
def test_bad_environment_value(section, key, value, reason):
    variable = f"FASTIM_{section.upper()}_{key.upper()}"
    message = error_of(environ={variable: value})
    assert message.startswith(f"invalid setting [{section}] {key} = {value!r} (from {variable}): ")
    assert reason in message


def test_secrets_never_appear_in_errors():
    message = error_of(environ={"FASTIM_API_KEY": "short secret"})
    assert message.startswith("invalid setting [api] key = '***' (from FASTIM_API_KEY): ")
    assert "secret" not in message
    message = error_of(environ={"FASTIM_AUTH_JWT_SECRET": "s3cr3t-value", "FASTIM_AUTH_JWT_PUBLIC_KEY_FILE": "/etc/hosts"})
    assert "s3cr3t" not in message


def test_error_message_matches_the_documented_shape():
    message = error_of(environ={"FASTIM_SERVER_PORT": "abc"})
    assert message == "invalid setting [server] port = 'abc' (from FASTIM_SERVER_PORT): Not a valid integer."


def test_bad_value_from_file_names_the_file(empty_cwd):
    path = write_ini(empty_cwd, "[im]\nlist_num = lots\n")
    assert error_of(config_path=path) == (
        f"invalid setting [im] list_num = 'lots' (from {path}): Not a valid integer."
    )


def test_bad_value_from_flag_names_the_flag():
    message = error_of(overrides={("storage", "redis_url"): "localhost"})
    assert message.startswith("invalid setting [storage] redis_url = 'localhost' (from --redis-url): ")


def test_value_with_newline_stays_on_one_line():
    message = error_of(environ={"FASTIM_SERVER_PORT": "90\n00"})
    assert "'90\\n00'" in message


def test_several_bad_values_are_all_named_on_one_line():
    message = error_of(environ={"FASTIM_SERVER_PORT": "x", "FASTIM_IM_LIST_NUM": "y"})
    assert "[server] port = 'x'" in message
    assert "[im] list_num = 'y'" in message


# --- unknown names and unreadable files ----------------------------------------


def test_unknown_key_in_file_is_an_error(empty_cwd):
    path = write_ini(empty_cwd, "[server]\nprot = 9000\n")
    message = error_of(config_path=path)
    assert message == f"unknown setting [server] prot in {path} (did you mean port?)"


def test_unknown_section_in_file_is_an_error(empty_cwd):
    path = write_ini(empty_cwd, "[serverr]\nport = 9000\n")
    assert error_of(config_path=path).startswith(f"unknown section [serverr] in {path}")


def test_default_section_is_not_special(empty_cwd):
    path = write_ini(empty_cwd, "[DEFAULT]\nport = 9000\n")
    assert error_of(config_path=path).startswith("unknown section [DEFAULT]")


def test_known_section_with_unknown_key_in_environment_is_an_error():
    message = error_of(environ={"FASTIM_IM_LISTNUM": "5"})
    assert message == "unknown setting [im] listnum (from FASTIM_IM_LISTNUM) (did you mean list_num?)"


def test_explicit_missing_config_file_is_an_error(empty_cwd):
    missing = str(empty_cwd / "nope.ini")
    assert error_of(config_path=missing) == f"config file not found: {missing}"


@pytest.mark.parametrize(
    "text", ["port = 9000\n", "[server]\nport = 1\nport = 2\n", "[server]\nport\n"]
)
def test_malformed_file_is_one_line_error(empty_cwd, text):
    path = write_ini(empty_cwd, text)
    assert error_of(config_path=path).startswith(f"cannot read config file {path}: ")


def test_several_workers_need_the_redis_backend():
    with pytest.raises(SettingsError) as error:
        load(overrides={("server", "workers"): "2"})
    assert "workers" in str(error.value) and "redis" in str(error.value) and "\n" not in str(error.value)
    redis_workers = load(overrides={("server", "workers"): "4", ("storage", "backend"): "redis"})
    assert redis_workers.server.workers == 4


# --- Redis topologies --------------------------------------------------------------


def test_a_cluster_selects_the_redis_backend_and_the_cluster_mode():
    settings = load(overrides={("storage", "redis_cluster"): "127.0.0.1:7000, 127.0.0.1:7001"})
    assert (settings.storage.backend, settings.storage.redis_mode) == ("redis", "cluster")


def test_sentinels_need_the_master_name():
    message = error_of(overrides={("storage", "redis_sentinels"): "127.0.0.1:26379"})
    assert message.startswith("invalid setting [storage] redis_sentinel_master = ''")
    assert "Sentinel needs the master's name too." in message
    settings = load(overrides={("storage", "redis_sentinels"): "127.0.0.1:26379",
                               ("storage", "redis_sentinel_master"): "chat"})
    assert (settings.storage.backend, settings.storage.redis_mode) == ("redis", "sentinel")


def test_cluster_and_sentinel_together_are_refused():
    message = error_of(overrides={("storage", "redis_cluster"): "127.0.0.1:7000",
                                  ("storage", "redis_sentinels"): "127.0.0.1:26379",
                                  ("storage", "redis_sentinel_master"): "chat"})
    assert "Give a Redis Cluster or Sentinel, not both." in message


def test_a_cluster_with_the_memory_backend_asked_for_is_refused():
    message = error_of(overrides={("storage", "redis_cluster"): "127.0.0.1:7000", ("storage", "backend"): "memory"})
    assert message == (
        "invalid setting [storage] backend = 'memory' (from --backend): [storage] redis_cluster is set, "
        "which needs the redis backend"
    )


# --- storage and broker chosen apart --------------------------------------------------


@pytest.mark.parametrize(("storage", "broker", "expected"), [
    ("memory", None, "memory"),
    ("redis", None, "redis"),
    ("sqlite", None, "memory"),
    ("postgres", None, "memory"),
    ("postgres", "redis", "redis"),
    ("sqlite", "redis", "redis"),
])
def test_the_broker_follows_the_storage_unless_named(storage, broker, expected):
    overrides = {("storage", "backend"): storage}
    if storage == "postgres":
        overrides["storage", "database_url"] = "postgresql://u@db.example/chat"
    if broker is not None:
        overrides["broker", "backend"] = broker
    settings = load(overrides=overrides)
    assert (settings.storage.backend, settings.broker.backend) == (storage, expected)


def test_sqlite_defaults_to_a_file_in_the_working_directory():
    assert load(overrides={("storage", "backend"): "sqlite"}).storage.database_url == "sqlite:///fastim.db"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({("storage", "backend"): "postgres"},
     "invalid setting [storage] database_url = '' (from built-in default): [storage] backend = postgres needs a "
     "postgresql:// URL"),
    ({("storage", "backend"): "sqlite", ("storage", "database_url"): "postgresql://u@h/d"},
     "invalid setting [storage] database_url = 'postgresql://u@h/d' (from --database-url): [storage] backend = "
     "sqlite needs a sqlite:/// URL"),
    ({("storage", "backend"): "redis", ("broker", "backend"): "memory"},
     "invalid setting [broker] backend = 'memory' (from --broker): Redis storage announces every event on Redis: "
     "[storage] backend = redis needs the redis broker"),
    ({("broker", "backend"): "redis"},
     "invalid setting [broker] backend = 'redis' (from --broker): in-memory storage is one node's own: other "
     "nodes could not read what a redis broker announced"),
    ({("storage", "backend"): "sqlite", ("server", "workers"): "2"},
     "invalid setting [server] workers = '2' (from --workers): several workers need a shared storage; SQLite is "
     "one process's (use postgres or redis)"),
    ({("storage", "backend"): "postgres", ("storage", "database_url"): "postgresql://u@h/d",
      ("server", "workers"): "2"},
     "invalid setting [server] workers = '2' (from --workers): several workers need [broker] backend = redis; a "
     "memory broker reaches one process"),
])
def test_combinations_that_cannot_work_are_refused_in_one_line(overrides, expected):
    assert error_of(overrides=overrides) == expected

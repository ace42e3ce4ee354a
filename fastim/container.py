"""The composition root: the only module that names adapters.

settings -> Redis client -> repositories and broker -> services -> handlers.
Choosing the backend is one ``Selector`` on ``config.storage.backend``.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from fastim.domain.groups import Groups
from fastim.domain.messages import Messages
from fastim.domain.sessions import Sessions
from fastim.domain.throttle import LoginThrottle
from fastim.infrastructure.auth import AcceptAnyPassword
from fastim.infrastructure.clock import SystemClock
from fastim.infrastructure.join_policy import AllowAnyJoin
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import (
    MemoryMembershipRepository,
    MemoryMessageRepository,
    MemoryStorage,
    MemoryTokenRepository,
)
from fastim.infrastructure.redis.broker import RedisBroker
from fastim.infrastructure.redis.client import make_client
from fastim.infrastructure.redis.cluster import ClusterCommands, parse_addresses
from fastim.infrastructure.redis.keys import CLUSTER, STANDALONE
from fastim.infrastructure.redis.pipeline import PipelinedConnection
from fastim.infrastructure.redis.sentinel import make_sentinel, sentinel_client, sentinel_commands
from fastim.infrastructure.redis.sharded_broker import ShardedBroker
from fastim.infrastructure.sql.engine import make_engine
from fastim.infrastructure.sql.repositories import (
    SqlMembershipRepository,
    SqlMessageRepository,
    SqlStorage,
    SqlTokenRepository,
)
from fastim.infrastructure.redis.repositories import (
    RedisMembershipRepository,
    RedisMessageRepository,
    RedisStorage,
    RedisTokenRepository,
)
from fastim.interfaces.http.base import HttpContext
from fastim.interfaces.http.gate import AuthGate, CorsPolicy
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.base import SocketContext
from fastim.interfaces.ws.chat import ChatLimits, ChatServices
from fastim.interfaces.ws.connections import Connections
from fastim.interfaces.ws.group_list import ListServices, MembershipRefresher
from fastim.interfaces.ws.hub import Hub
from fastim.interfaces.ws.keepalive import Keepalive
from fastim.interfaces.ws.recovery import Recovery
from fastim.interfaces.ws.session_watch import SessionWatch
from fastim.interfaces.ws.upgrade import transport_limits


def _ms_to_s(milliseconds: int) -> float:
    return milliseconds / 1000


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    clock = providers.Singleton(SystemClock)

    # One Redis (config.storage.redis_url), one watched by Sentinel, or a Redis Cluster.
    redis_sentinel = providers.Singleton(make_sentinel, config.storage.redis_sentinels)
    # redis-py's client: pub/sub and the readiness PING (none on a cluster: the commands do both).
    redis_client = providers.Selector(
        config.storage.redis_mode,
        single=providers.Singleton(make_client, config.storage.redis_url),
        sentinel=providers.Singleton(
            sentinel_client, redis_sentinel, config.storage.redis_sentinel_master, config.storage.redis_url
        ),
        cluster=providers.Object(None),
    )
    # Every command of a loop turn in one write: on one connection of its own, or one per shard.
    redis_commands = providers.Selector(
        config.storage.redis_mode,
        single=providers.Singleton(PipelinedConnection, config.storage.redis_url),
        sentinel=providers.Singleton(
            sentinel_commands, redis_sentinel, config.storage.redis_sentinel_master, config.storage.redis_url
        ),
        cluster=providers.Singleton(ClusterCommands, providers.Callable(parse_addresses, config.storage.redis_cluster)),
    )
    redis_layout = providers.Selector(
        config.storage.redis_mode,
        single=providers.Object(STANDALONE),
        sentinel=providers.Object(STANDALONE),
        cluster=providers.Object(CLUSTER),
    )

    broker = providers.Selector(
        config.broker.backend,
        memory=providers.Singleton(MemoryBroker),
        redis=providers.Selector(
            config.storage.redis_mode,
            single=providers.Singleton(RedisBroker, redis_client, redis_commands),
            sentinel=providers.Singleton(RedisBroker, redis_client, redis_commands),
            cluster=providers.Singleton(ShardedBroker, redis_commands),
        ),
    )
    # SQLite or PostgreSQL: one engine, the same repositories.
    sql_engine = providers.Singleton(make_engine, config.storage.database_url)
    sql_messages = providers.Singleton(SqlMessageRepository, sql_engine, clock, broker)
    sql_memberships = providers.Singleton(SqlMembershipRepository, sql_engine)
    sql_tokens = providers.Singleton(SqlTokenRepository, sql_engine, clock)
    sql_storage = providers.Singleton(SqlStorage, sql_engine)

    message_repository = providers.Selector(
        config.storage.backend,
        sqlite=sql_messages,
        postgres=sql_messages,
        memory=providers.Singleton(MemoryMessageRepository, clock, broker),
        redis=providers.Singleton(
            RedisMessageRepository,
            redis_client,
            redis_commands,
            layout=redis_layout,
            wait_replicas=config.storage.redis_wait_replicas,
        ),
    )
    membership_repository = providers.Selector(
        config.storage.backend,
        sqlite=sql_memberships,
        postgres=sql_memberships,
        memory=providers.Singleton(MemoryMembershipRepository),
        redis=providers.Singleton(RedisMembershipRepository, redis_client, redis_commands),
    )
    token_repository = providers.Selector(
        config.storage.backend,
        sqlite=sql_tokens,
        postgres=sql_tokens,
        memory=providers.Singleton(MemoryTokenRepository, clock),
        redis=providers.Singleton(RedisTokenRepository, redis_client, redis_commands),
    )
    storage = providers.Selector(
        config.storage.backend,
        sqlite=sql_storage,
        postgres=sql_storage,
        memory=providers.Singleton(MemoryStorage),
        redis=providers.Selector(
            config.storage.redis_mode,
            single=providers.Singleton(RedisStorage, redis_client),
            sentinel=providers.Singleton(RedisStorage, redis_client),
            cluster=providers.Singleton(RedisStorage, redis_commands),
        ),
    )

    authenticator = providers.Singleton(AcceptAnyPassword)
    join_policy = providers.Singleton(AllowAnyJoin)
    login_throttle = providers.Singleton(
        LoginThrottle,
        per_source=config.auth.login_failures_per_ip,
        per_user=config.auth.login_failures_per_user,
        window_s=config.auth.login_failure_window,
    )

    messages = providers.Singleton(
        Messages,
        repository=message_repository,
        clock=clock,
        message_timeout=config.im.message_timeout,
        list_num=config.im.list_num,
        recall_time_limit=config.im.recall_time_limit,
        history_max=config.im.history_max,
        history_page_max=config.im.history_page_max,
        recover_max=config.im.recover_max,
    )
    groups = providers.Singleton(
        Groups,
        memberships=membership_repository,
        messages=message_repository,
        policy=join_policy,
        auto_join=config.im.auto_join,
        max_groups=config.im.max_groups_per_user,
    )
    sessions = providers.Singleton(
        Sessions,
        tokens=token_repository,
        authenticator=authenticator,
        broker=broker,
        token_ttl=config.im.token_ttl,
        login_auth=config.im.login_auth,
        throttle=login_throttle,
    )

    auth_gate = providers.Singleton(AuthGate, sessions, config.server.open_paths)
    cors = providers.Singleton(CorsPolicy, config.server.allowed_origins)

    metrics = providers.Singleton(Metrics, broker)
    connections = providers.Singleton(Connections, metrics)
    session_watch = providers.Singleton(SessionWatch, sessions, broker)
    keepalive = providers.Singleton(
        Keepalive, connections, metrics, interval_s=config.im.ping_interval, timeout_s=config.im.ping_timeout
    )
    socket_context = providers.Singleton(
        SocketContext, sessions=sessions, connections=connections, metrics=metrics, session_watch=session_watch
    )
    transport_limits = providers.Singleton(
        transport_limits,
        max_pending_bytes=config.im.max_pending_bytes,
        max_message_bytes=config.im.max_message_bytes,
    )
    hub = providers.Singleton(
        Hub, broker, messages, metrics, clock, max_window_s=providers.Callable(_ms_to_s, config.im.coalescing_window_ms)
    )
    http_context = providers.Singleton(HttpContext, auth_gate, cors, metrics)
    membership_refresher = providers.Singleton(MembershipRefresher)
    chat_limits = providers.Singleton(
        ChatLimits,
        max_message_bytes=config.im.max_message_bytes,
        rate_limit=config.im.rate_limit,
        rate_burst=config.im.rate_burst,
    )
    recovery = providers.Singleton(Recovery, messages, providers.Callable(lambda hub: hub.sequencer, hub), metrics)
    chat_services = providers.Singleton(ChatServices, hub, messages, groups, chat_limits, recovery)
    list_services = providers.Singleton(
        ListServices, hub, groups, membership_refresher, config.im.group_list_update_rate
    )


def build_container(settings) -> Container:
    """A container for one node, configured from validated :class:`fastim.settings.Settings`."""
    container = Container()
    container.config.from_dict(settings.as_dict())
    return container


def open_logins(container: Container) -> list[str]:
    """Why anyone can act as any user on this node, one reason per setting; empty when logins are checked."""
    reasons = []
    if isinstance(container.authenticator(), AcceptAnyPassword):
        reasons.append("the default authenticator accepts any password")
    if not container.config.im.login_auth():
        reasons.append("[im] login_auth = 0 lets WebSockets in without a token")
    return reasons


async def close_container(container: Container) -> None:
    """Release what the node opened: timers, the broker's subscriptions and the Redis connections."""
    await container.keepalive().close()
    await container.session_watch().close()
    await container.membership_refresher().close()
    await container.hub().close()
    await container.broker().close()
    if container.config.storage.backend() in ("sqlite", "postgres"):
        await container.sql_messages().close()
        await container.sql_engine().dispose()
    if "redis" in (container.config.storage.backend(), container.config.broker.backend()):
        await container.redis_commands().aclose()
        client = container.redis_client()
        if client is not None:
            await client.aclose()

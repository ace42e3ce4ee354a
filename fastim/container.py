"""The composition root: the only module that names adapters.

settings -> Redis client -> repositories and broker -> services -> handlers.
Choosing the backend is one ``Selector`` on ``config.storage.backend``.
"""

from __future__ import annotations

import uuid

from dependency_injector import containers, providers

from fastim.domain.groups import Groups
from fastim.domain.messages import Messages
from fastim.domain.presence import Presence
from fastim.domain.review import NoHook, Review
from fastim.domain.sessions import Sessions
from fastim.domain.throttle import LoginThrottle
from fastim.infrastructure.auth import AcceptAnyPassword
from fastim.infrastructure.clock import SystemClock
from fastim.infrastructure.http_hook import HttpPublishHook
from fastim.infrastructure.join_policy import AllowAnyJoin
from fastim.infrastructure.jwt_verifier import make_verifier
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.presence import MemoryPresenceRepository
from fastim.infrastructure.memory.repositories import (
    MemoryMembershipRepository,
    MemoryMessageRepository,
    MemoryStorage,
    MemoryTokenRepository,
)
from fastim.infrastructure.redis.broker import RedisBroker
from fastim.infrastructure.redis.client import make_client
from fastim.infrastructure.redis.cluster import ClusterCommands, parse_addresses
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.keys import CLUSTER, STANDALONE
from fastim.infrastructure.redis.pipeline import PipelinedConnection
from fastim.infrastructure.redis.presence import RedisPresenceRepository
from fastim.infrastructure.redis.sentinel import make_sentinel, sentinel_client, sentinel_commands, sentinel_endpoint
from fastim.infrastructure.redis.sharded_broker import ShardedBroker
from fastim.infrastructure.sql.engine import make_engine
from fastim.infrastructure.sql.presence import SqlPresenceRepository
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
from fastim.interfaces.http.server_api import ServerApi
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.base import SocketContext
from fastim.interfaces.ws.chat import ChatLimits, ChatServices
from fastim.interfaces.ws.connections import Connections
from fastim.interfaces.ws.disconnects import Disconnects
from fastim.interfaces.ws.group_list import ListServices, MembershipRefresher
from fastim.interfaces.ws.hub import Hub
from fastim.interfaces.ws.keepalive import Keepalive
from fastim.interfaces.ws.recovery import Recovery
from fastim.interfaces.ws.session_watch import SessionWatch
from fastim.interfaces.ws.upgrade import transport_limits


def _ms_to_s(milliseconds: int) -> float:
    return milliseconds / 1000


def _new_node_id() -> str:
    """This node's id in presence: random per process, so a restarted node never inherits a lapsed lease."""
    return uuid.uuid4().hex


def _hook_kind(publish_url: str) -> str:
    return "http" if publish_url else "off"


def _reviewing(review: Review) -> Review | None:
    """What chat sockets get: the review, or None when no hook is set, so a send does not even await it."""
    return review if review.active else None


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    clock = providers.Singleton(SystemClock)
    node_id = providers.Singleton(_new_node_id)

    # One Redis (config.storage.redis_url), one watched by Sentinel, or a Redis Cluster.
    redis_sentinel = providers.Singleton(make_sentinel, config.storage.redis_sentinels)
    # redis-py's client: the readiness PING (none on a cluster: the commands do it).
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
    # Where the broker's pub/sub connection goes (on a cluster: to each shard, as the slot map says).
    redis_endpoint = providers.Selector(
        config.storage.redis_mode,
        single=providers.Singleton(Endpoint, config.storage.redis_url),
        sentinel=providers.Singleton(
            sentinel_endpoint, redis_sentinel, config.storage.redis_sentinel_master, config.storage.redis_url
        ),
        cluster=providers.Object(None),
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
            single=providers.Singleton(RedisBroker, redis_endpoint, redis_commands),
            sentinel=providers.Singleton(RedisBroker, redis_endpoint, redis_commands),
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
    sql_presence = providers.Singleton(SqlPresenceRepository, sql_engine, clock, broker)
    presence_repository = providers.Selector(
        config.storage.backend,
        sqlite=sql_presence,
        postgres=sql_presence,
        memory=providers.Singleton(MemoryPresenceRepository, clock, broker),
        redis=providers.Singleton(RedisPresenceRepository, redis_client, redis_commands, layout=redis_layout),
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
    # JWT connection tokens the application mints; None unless [auth] jwt_secret or jwt_public_key_file is set.
    grant_verifier = providers.Singleton(
        make_verifier,
        config.auth.jwt_secret,
        config.auth.jwt_public_key_file,
        config.auth.jwt_audience,
        config.auth.jwt_issuer,
        config.auth.jwt_leeway,
    )
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
        verifier=grant_verifier,
        password_logins=config.auth.password_logins,
    )

    auth_gate = providers.Singleton(AuthGate, sessions, config.server.open_paths)
    cors = providers.Singleton(CorsPolicy, config.server.allowed_origins)

    metrics = providers.Singleton(Metrics, broker)
    connections = providers.Singleton(Connections, metrics)
    session_watch = providers.Singleton(SessionWatch, sessions, broker)
    disconnects = providers.Singleton(Disconnects, connections, broker)
    keepalive = providers.Singleton(
        Keepalive, connections, metrics, interval_s=config.im.ping_interval, timeout_s=config.im.ping_timeout
    )
    socket_context = providers.Singleton(
        SocketContext,
        sessions=sessions,
        connections=connections,
        metrics=metrics,
        session_watch=session_watch,
        disconnects=disconnects,
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
    # Who is online in each group, across nodes; with [im] presence_events, joins and leaves are announced.
    presence = providers.Singleton(
        Presence,
        presence_repository,
        node_id,
        announce=config.im.presence_events,
        on_failure=providers.Callable(lambda metrics: metrics.presence_flush_failures.inc, metrics),
    )
    server_api = providers.Singleton(
        ServerApi,
        key=config.api.key,
        messages=messages,
        sessions=sessions,
        presence=presence,
        max_message_bytes=config.im.max_message_bytes,
        broadcast_max=config.api.broadcast_max,
    )
    membership_refresher = providers.Singleton(MembershipRefresher)
    chat_limits = providers.Singleton(
        ChatLimits,
        max_message_bytes=config.im.max_message_bytes,
        rate_limit=config.im.rate_limit,
        rate_burst=config.im.rate_burst,
    )
    recovery = providers.Singleton(Recovery, messages, providers.Callable(lambda hub: hub.sequencer, hub), metrics)
    # The application reviews each chat send before it is stored ([hooks] publish_url; empty: NoHook).
    publish_hook = providers.Selector(
        providers.Callable(_hook_kind, config.hooks.publish_url),
        off=providers.Singleton(NoHook),
        http=providers.Singleton(
            HttpPublishHook,
            config.hooks.publish_url,
            timeout_s=config.hooks.timeout,
            max_clients=config.hooks.max_in_flight,
        ),
    )
    review = providers.Singleton(
        Review,
        publish_hook,
        metrics,
        fail_open=providers.Callable(lambda fail: fail == "open", config.hooks.fail),
        max_in_flight=config.hooks.max_in_flight,
        max_message_bytes=config.im.max_message_bytes,
    )
    chat_services = providers.Singleton(
        ChatServices, hub, messages, groups, chat_limits, recovery, review=providers.Callable(_reviewing, review),
        presence=presence,
    )
    list_services = providers.Singleton(
        ListServices, hub, groups, membership_refresher, config.im.group_list_update_rate, presence=presence
    )


def build_container(settings) -> Container:
    """A container for one node, configured from validated :class:`fastim.settings.Settings`."""
    container = Container()
    container.config.from_dict(settings.as_dict())
    return container


def open_logins(container: Container) -> list[str]:
    """Why anyone can act as any user on this node, one reason per setting; empty when logins are checked."""
    reasons = []
    sessions = container.sessions()
    if sessions.password_logins and isinstance(container.authenticator(), AcceptAnyPassword):
        reasons.append("the default authenticator accepts any password")
    if not sessions.login_auth:
        reasons.append("[im] login_auth = 0 lets WebSockets in without a token")
    return reasons


async def close_container(container: Container) -> None:
    """Release what the node opened: timers, the broker's subscriptions and the Redis connections."""
    await container.keepalive().close()
    await container.publish_hook().close()  # before the storage: a send it reviews meanwhile is still stored
    await container.session_watch().close()
    await container.membership_refresher().close()
    await container.hub().close()
    await container.presence().close()  # its users leave at once, announced through the broker: before it closes
    await container.broker().close()
    if container.config.storage.backend() in ("sqlite", "postgres"):
        await container.sql_messages().close()
        await container.sql_engine().dispose()
    if "redis" in (container.config.storage.backend(), container.config.broker.backend()):
        await container.redis_commands().aclose()
        client = container.redis_client()
        if client is not None:
            await client.aclose()

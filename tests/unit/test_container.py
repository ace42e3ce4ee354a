"""The container is the composition root: one selection picks the backend, overrides replace parts."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
from dependency_injector import providers

from fastim.container import build_container
from fastim.domain.errors import AuthenticationFailed
from fastim.domain.model import Appended
from fastim.infrastructure.memory.repositories import MemoryMessageRepository
from fastim.infrastructure.redis.repositories import RedisMessageRepository
from tests.settings_factory import make_settings

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "user_store_auth.py"


def load_example():
    spec = importlib.util.spec_from_file_location("user_store_auth", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_backend_is_one_selection():
    assert isinstance(build_container(make_settings()).message_repository(), MemoryMessageRepository)
    redis_container = build_container(make_settings(storage__backend="redis"))
    assert isinstance(redis_container.message_repository(), RedisMessageRepository)


def test_services_share_one_repository_per_node_and_two_containers_are_two_nodes():
    first, second = build_container(make_settings()), build_container(make_settings())
    assert first.messages() is first.messages()
    assert first.message_repository() is first.message_repository()
    assert first.message_repository() is not second.message_repository()
    assert first.hub() is not second.hub()


class RecordingRepository:
    """A fake repository that records what the service asked of it."""

    def __init__(self):
        self.appended = []

    async def append(self, message, ttl_seconds, max_length=0):
        self.appended.append((message, ttl_seconds, max_length))
        return Appended(message, len(self.appended))


@pytest.mark.gen_test
async def test_a_repository_is_overridden_through_the_container():
    container = build_container(make_settings(im__message_timeout=77, im__history_max=5))
    fake = RecordingRepository()
    container.message_repository.override(providers.Object(fake))
    message = await container.messages().post("g", "u", "hi")
    assert fake.appended == [(message, 77, 5)]


@pytest.mark.gen_test
async def test_the_authenticator_is_overridden_through_the_container_as_the_readme_example_does():
    example = load_example()
    container = build_container(make_settings())
    container.authenticator.override(providers.Singleton(example.UserStoreAuthenticator, example.DEMO_USERS))
    sessions = container.sessions()
    assert len(await sessions.login("1", "123456")) == 32
    with pytest.raises(AuthenticationFailed):
        await sessions.login("1", "wrong")
    with pytest.raises(AuthenticationFailed):
        await sessions.login("nobody", "123456")

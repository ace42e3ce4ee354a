from setuptools import find_packages, setup

setup(
    name="fastim",
    version="0.1.0",
    description="Distributed group-chat server, wire-compatible with fast-im",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["fastim", "fastim.*"]),
    include_package_data=True,
    package_data={"fastim": ["interfaces/web/static/*"]},
    install_requires=[
        "tornado>=6.3,<7",
        "redis[hiredis]>=5.0",
        "marshmallow>=3.20",
        "dependency-injector>=4.41",
        "apispec>=6.0",
        "prometheus-client>=0.17",
        # --storage sqlite | postgres
        "sqlalchemy[asyncio]>=2.0",
        "aiosqlite>=0.19",
        "asyncpg>=0.29",
        # [auth] jwt_secret | jwt_public_key_file: JWT connection tokens (RS256/ES256 need cryptography)
        "pyjwt>=2.8",
        "cryptography>=41",
        # fastim.client, the SDK and the terminal client (fastim chat|tail|send)
        "websockets>=13.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-tornado>=0.8.1",
            # TcpFakeServer pushing pub/sub messages to its clients (tests/fake_redis_server.py)
            "fakeredis[lua]>=2.41",
            "openapi-spec-validator>=0.7",
            "hypothesis>=6.80",
            "websockets>=13.0",
            "playwright>=1.40",  # the Python driver only; the browser is the system's chromium
            # tests/integration/test_benchmark.py runs the benchmark's own command
            "picows>=2.3",
            "uvloop>=0.19",
        ],
        # python -m benchmarks.run: a compiled WebSocket client on a fast loop, cheap enough
        # to load a fast server from the other core
        "bench": [
            "picows>=2.3",
            "uvloop>=0.19",
        ],
    },
    entry_points={"console_scripts": ["fastim = fastim.cli:main"]},
)

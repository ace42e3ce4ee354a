"""The SQL storage (SQLite, PostgreSQL) on SQLAlchemy 2 (asyncio): schema, engine, repositories."""

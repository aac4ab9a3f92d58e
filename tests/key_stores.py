"""Key stores for tests that put something between a session and its real key store."""

from __future__ import annotations

from typing import Any


class PassThrough:
    """Hands every call to ``inner``; subclasses change what they need to."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def get_seed(self, session_id: str) -> Any:
        return await self.inner.get_seed(session_id)

    async def put_seed(self, session_id: str, seed: Any) -> Any:
        return await self.inner.put_seed(session_id, seed)

    async def replace_seed(self, session_id: str, seed: Any) -> None:
        await self.inner.replace_seed(session_id, seed)

    async def destroy_seed(self, session_id: str) -> Any:
        return await self.inner.destroy_seed(session_id)

    async def seed_session_ids(self) -> list[str]:
        return list(await self.inner.seed_session_ids())

"""A real loopback webhook receiver that fails, delays and duplicates at random
(seeded). It verifies every request with the independent `standardwebhooks`
library and records what it accepted, in arrival order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Behaviour:
    fail: float = 0.0  # answer 500 without recording
    delay: float = 0.0  # sleep before answering (keeps posts in flight)
    delay_seconds: float = 0.2
    duplicate: float = 0.0  # record, then answer 503: the sender re-sends what we have
    seed: int = 20


@dataclass
class RandomReceiver:
    behaviour: Behaviour
    url: str = ""
    received: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    bad_signatures: int = 0
    requests: int = 0

    def first_arrivals(self) -> list[tuple[str, dict[str, object]]]:
        """(webhook-id, event) in order of each id's first arrival."""
        seen: dict[str, dict[str, object]] = {}
        for message_id, event in self.received:
            seen.setdefault(message_id, event)
        return list(seen.items())


@asynccontextmanager
async def running_receiver(secret: str, behaviour: Behaviour) -> AsyncIterator[RandomReceiver]:
    receiver = RandomReceiver(behaviour)
    verifier = Webhook(secret)
    rng = random.Random(behaviour.seed)

    async def handle(request: web.Request) -> web.Response:
        receiver.requests += 1
        body = await request.read()
        try:
            event = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            receiver.bad_signatures += 1
            return web.Response(status=400)
        if rng.random() < behaviour.fail:
            return web.Response(status=500)
        if rng.random() < behaviour.delay:
            await asyncio.sleep(behaviour.delay_seconds)
        status = 503 if rng.random() < behaviour.duplicate else 204
        receiver.received.append((request.headers["webhook-id"], event))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()

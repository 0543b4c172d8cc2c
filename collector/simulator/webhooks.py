"""``story_insights`` webhooks: sent when a story expires, signed, retried, replayable."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime

import aiohttp

from collector.simulator import stats, world

#: Meta keeps retrying a failing delivery for up to 36 hours
GIVE_UP_AFTER = 36 * 3600.0


@dataclasses.dataclass
class Delivery:
    """One webhook notification and what happened to it."""

    id: int
    story_id: str
    ig_user_id: str
    body: bytes
    signature: str
    created_at: float
    next_attempt: float
    attempts: int = 0
    status: int | None = None
    delivered: bool = False
    failed: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)
    replay_of: int | None = None

    @property
    def payload(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(self.body)
        return loaded


def sign(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` value for a raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    """Queues a notification per expired story and POSTs due ones to ``url``."""

    def __init__(self, w: world.World, st: stats.Stats) -> None:
        self.world = w
        self.stats = st
        self.url = w.config.webhook_url
        self.deliveries: list[Delivery] = []
        self._scanned_until = w.created_at.timestamp()
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    def story_values(self, story: world.Media) -> dict[str, int]:
        """The final values a story's webhook carries (legacy keys, as documented)."""
        w = self.world
        at = story.expires if story.expires is not None else story.posted
        nav = w.media_breakdown(story.id, "navigation", at)
        values = {
            "exits": nav["tap_exit"],
            "replies": int(w.media_metric(story.id, "replies", at) or 0),
            "reach": int(w.media_metric(story.id, "reach", at) or 0),
            "taps_forward": nav["tap_forward"],
            "taps_back": nav["tap_back"],
            "impressions": int(w.media_metric(story.id, "views", at) or 0),
        }
        low = w.config.webhook_low_value
        if low is not None:
            floor = w.config.story_min_value
            values = {k: (low if v < floor else v) for k, v in values.items()}
        return values

    def _enqueue_expired(self, now: float) -> None:
        for story in self.world.stories_expiring(self._scanned_until, now):
            if story.deleted or story.expires is None:
                continue
            body_obj = {
                "object": "instagram",
                "entry": [
                    {
                        "id": story.ig_user_id,
                        "time": int(story.expires),
                        "changes": [
                            {
                                "field": "story_insights",
                                "value": {"media_id": story.id, **self.story_values(story)},
                            }
                        ],
                    }
                ],
            }
            body = json.dumps(body_obj, separators=(",", ":")).encode()
            self.deliveries.append(
                Delivery(
                    id=len(self.deliveries) + 1,
                    story_id=story.id,
                    ig_user_id=story.ig_user_id,
                    body=body,
                    signature=sign(self.world.signing_secret, body),
                    created_at=now,
                    next_attempt=now,
                )
            )
        self._scanned_until = max(self._scanned_until, now)

    async def deliver_due(self) -> list[Delivery]:
        """Queue stories expired by now and attempt every due delivery; returns those attempted."""
        async with self._lock:
            now = self.world.clock.now().timestamp()
            self._enqueue_expired(now)
            if self.url is None:
                return []
            due = [
                d
                for d in self.deliveries
                if not d.delivered and not d.failed and d.next_attempt <= now
            ]
            for delivery in due:
                await self._attempt(delivery, now)
            return due

    async def _attempt(self, delivery: Delivery, now: float) -> None:
        assert self.url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        delivery.attempts += 1
        try:
            async with self._session.post(
                self.url,
                data=delivery.body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": delivery.signature,
                    "User-Agent": "facebookexternalua",
                },
            ) as resp:
                await resp.read()
                delivery.status = resp.status
                ok = 200 <= resp.status < 300
                if not ok:
                    delivery.errors.append(f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok = False
            delivery.status = None
            delivery.errors.append(f"{type(exc).__name__}: {exc}")
        if ok:
            delivery.delivered = True
            self._log_served(delivery, now)
            return
        delays = self.world.config.webhook_retry_delays or (60.0,)
        delay = delays[min(delivery.attempts - 1, len(delays) - 1)]
        delivery.next_attempt = now + delay
        if delivery.next_attempt - delivery.created_at > GIVE_UP_AFTER:
            delivery.failed = True

    def _log_served(self, delivery: Delivery, now: float) -> None:
        value = json.loads(delivery.body)["entry"][0]["changes"][0]["value"]
        at = datetime.fromtimestamp(now, UTC)
        self.stats.serve(
            [
                stats.ServedValue(
                    object_id=delivery.story_id,
                    account=delivery.ig_user_id,
                    metric=key,
                    value=v,
                    served_at=at,
                    period="lifetime",
                    source="webhook",
                )
                for key, v in value.items()
                if key != "media_id"
            ]
        )

    async def replay(self, delivery_id: int) -> Delivery:
        """Send an earlier notification again, byte for byte (a Meta redelivery)."""
        original = self.deliveries[delivery_id - 1]
        now = self.world.clock.now().timestamp()
        copy = Delivery(
            id=len(self.deliveries) + 1,
            story_id=original.story_id,
            ig_user_id=original.ig_user_id,
            body=original.body,
            signature=original.signature,
            created_at=now,
            next_attempt=now,
            replay_of=original.id,
        )
        self.deliveries.append(copy)
        if self.url is not None:
            async with self._lock:
                await self._attempt(copy, now)
        return copy

    async def verify(self, verify_token: str, challenge: str = "1158201444") -> tuple[int, str]:
        """The subscription handshake: GET ``hub.mode=subscribe`` to the endpoint."""
        if self.url is None:
            raise RuntimeError("no webhook_url configured")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": verify_token,
        }
        async with self._session.get(self.url, params=params) as resp:
            return resp.status, await resp.text()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Background loop: a delivery pass every ``interval`` real seconds until ``stop``."""
        while not stop.is_set():
            await self.deliver_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

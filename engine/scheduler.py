"""Fair scheduling with dynamic batching.

Queued jobs wait in one FIFO per user. Users are served round-robin: the user served longest ago goes first,
so one user with ten jobs cannot starve a user with one, and a user who was just served and asks again waits
behind everyone else. A batch starts with the next job in that order and is topped up with later jobs (in the
same service order) whose shape matches, up to a number of images.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

NEVER_SERVED = -1
REMEMBERED_USERS = 10_000


class Schedulable(Protocol):
    @property
    def user_key(self) -> str: ...

    @property
    def image_count(self) -> int: ...


J = TypeVar("J", bound=Schedulable)


class FairQueue(Generic[J]):
    def __init__(self) -> None:
        self._lanes: dict[str, deque[J]] = {}
        self._last_served: dict[str, int] = {}
        self._ticks = itertools.count()

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def __bool__(self) -> bool:
        return bool(self._lanes)

    def push(self, job: J) -> None:
        self._lanes.setdefault(job.user_key, deque()).append(job)

    def remove(self, job: J) -> bool:
        lane = self._lanes.get(job.user_key)
        if not lane or job not in lane:
            return False
        lane.remove(job)
        if not lane:
            del self._lanes[job.user_key]
        return True

    def service_order(self) -> list[J]:
        """The order in which queued jobs would run if nothing else arrived: one job per user per round."""
        users = sorted(self._lanes, key=lambda user: self._last_served.get(user, NEVER_SERVED))
        lanes = [self._lanes[user] for user in users]
        order: list[J] = []
        for round_index in range(max((len(lane) for lane in lanes), default=0)):
            order.extend(lane[round_index] for lane in lanes if round_index < len(lane))
        return order

    def take_batch(self, max_images: int, compatible: Callable[[J, J], bool]) -> list[J]:
        """Take the next job, plus later compatible jobs while the batch stays within `max_images`."""
        order = self.service_order()
        if not order:
            return []
        batch = [order[0]]
        images = order[0].image_count
        for job in order[1:]:
            if images + job.image_count <= max_images and compatible(order[0], job):
                batch.append(job)
                images += job.image_count
        for job in batch:
            self.remove(job)
            self._last_served[job.user_key] = next(self._ticks)
        self._forget_long_idle_users()
        return batch

    def _forget_long_idle_users(self) -> None:
        """Bound memory; a forgotten user merely counts as never served, which is the front of the round."""
        if len(self._last_served) > REMEMBERED_USERS:
            by_age = sorted(self._last_served, key=self._last_served.__getitem__)
            for user in by_age[: len(by_age) - REMEMBERED_USERS]:
                del self._last_served[user]

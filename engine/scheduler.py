"""Fair scheduling with dynamic batching.

Queued jobs wait in one FIFO per user; users are served round-robin, so one user with ten jobs cannot starve
a user with one. A batch starts with the next job in that order and is topped up with later jobs (in the same
service order) whose shape matches, up to a number of images.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Schedulable(Protocol):
    @property
    def user_key(self) -> str: ...

    @property
    def image_count(self) -> int: ...


J = TypeVar("J", bound=Schedulable)


class FairQueue(Generic[J]):
    def __init__(self) -> None:
        self._by_user: OrderedDict[str, deque[J]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_user.values())

    def push(self, job: J) -> None:
        self._by_user.setdefault(job.user_key, deque()).append(job)

    def remove(self, job: J) -> bool:
        jobs = self._by_user.get(job.user_key)
        if not jobs or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._by_user[job.user_key]
        return True

    def service_order(self) -> list[J]:
        """The order in which queued jobs would run if nothing else arrived: one job per user per round."""
        lanes = [list(jobs) for jobs in self._by_user.values()]
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
            self._take(job)
        return batch

    def _take(self, job: J) -> None:
        """Remove `job` and send its user to the back of the round."""
        self.remove(job)
        if job.user_key in self._by_user:
            self._by_user.move_to_end(job.user_key)

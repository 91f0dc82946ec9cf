"""Estimated-wait error on a simulated day of one queue: Hotline's estimate against Asterisk's.

The day (9:00–18:00): Poisson arrivals on a daily curve (a morning peak, a lunch dip, an
afternoon peak; ``--calls`` expected), log-normal talk times (mean 180 s, coefficient of
variation 0.8), the ``[queues]`` wrap-up after each call, 2–8 s of ringing before an agent
answers, and 3–6 agents staffed as the shifts change (an agent whose shift ends finishes their
call and wrap-up first). Callers hang up after an exponential patience (mean 4 minutes) unless
an agent took them first. Callers are taken first come, first served by the longest-idle agent.

A caller who finds no free agent hears an estimate at once and then every
``queues.announce_seconds`` until an agent takes them. Each estimate is compared with the time
the caller then really waited until an agent answered (callers who hung up have no true wait
and are left out). Hotline's is ``models.wait.estimate_wait`` from the caller's position, the
agents staffed and the handle time of the last ``queues.recent_calls`` calls
(``models.wait.handle_time``, as ``recent_handle_seconds`` computes it from the database).

Asterisk's (asterisk/asterisk, apps/app_queue.c at f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9):
``recalc_holdtime`` keeps one ``holdtime`` per queue: each time an agent answers,
``holdtime = ((holdtime << 2) - holdtime + wait) >> 2`` — an exponential average, a quarter
weight to the wait (whole seconds) of the caller just answered — or ``holdtime = wait`` while
no call of the queue has ended or been abandoned yet (``callscompleted`` counts in
``update_queue``, at the end of a call).
``say_position`` announces ``labs(holdtime + 30 - waited) / 60`` minutes (``waited``: this
caller's time in the queue), and nothing when that is 0: the same figure for every caller,
whatever their position. Its "estimate" rows use ``|holdtime - waited|`` in seconds, its "said"
rows the minutes it says (nothing counted as 0); Hotline's "said" rows ``spoken_minutes``.

    python bench/wait_estimate.py [--seed 1] [--days 1] [--calls 450]

With ``--days N`` the days follow one another, the recent handle times and Asterisk's holdtime
carrying over; figures are pooled.

Figures per method: estimates, mean/median/p90 absolute error, share within ±60 s, mean error
(+: told too long) and share told more than a minute too short; then the mean absolute error by
callers ahead.
"""

from __future__ import annotations

import argparse
import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from config.defaults import Queues
from models.wait import estimate_wait, handle_time, spoken_minutes

DAY_SECONDS = 9 * 3600
# Relative call volume by hour from 9:00 (interpolated between the hours' midpoints).
HOURLY_VOLUME = [0.7, 1.3, 1.4, 0.8, 0.9, 1.3, 1.2, 1.0, 0.7]
# (hours after 9:00, agents staffed from then on)
SHIFTS = [(0.0, 3), (1.0, 5), (3.0, 4), (5.0, 6), (7.0, 5), (8.0, 3)]  # lunch 12-14: 4
AGENTS = max(staffed for _, staffed in SHIFTS)
TALK_MEAN, TALK_CV = 180.0, 0.8
RING_SECONDS = (2.0, 8.0)
PATIENCE_MEAN = 240.0
AHEAD_GROUPS = [("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4-6", 4, 6), ("7+", 7, 10 ** 6)]


@dataclass(eq=False)
class Estimate:
    at: float
    ahead: int
    hotline: float
    asterisk: float  # seconds: |holdtime - waited|
    asterisk_minutes: int  # what say_position says


@dataclass(eq=False)
class Caller:
    arrived: float
    patience: float
    answered: float | None = None
    estimates: list[Estimate] = field(default_factory=list)


@dataclass(eq=False)
class Agent:
    on_shift: bool = False
    leaving: bool = False  # shift over: goes once this call's wrap-up ends
    busy: bool = False
    idle_since: float = 0.0


class Asterisk:
    """app_queue.c's holdtime: ``recalc_holdtime`` on every answer, read by ``say_position``."""

    def __init__(self) -> None:
        self.holdtime = 0
        self.finished = 0  # callscompleted + callsabandoned

    def answered(self, waited: float) -> None:
        seconds = int(waited)
        self.holdtime = seconds if self.finished == 0 else ((self.holdtime << 2) - self.holdtime + seconds) >> 2

    def finish(self) -> None:
        """A call ended (``update_queue``) or a caller hung up waiting (``record_abandoned``)."""
        self.finished += 1

    def estimate(self, waited: float) -> tuple[float, int]:
        return abs(self.holdtime - waited), abs(self.holdtime + 30 - int(waited)) // 60


class Day:
    """One queue's day as a discrete-event simulation; ``run`` returns its callers.

    ``talk`` (the recent talk times) and ``asterisk`` carry over from the day before, as the
    database and a running Asterisk would.
    """

    def __init__(self, rng: np.random.Generator, calls: float, settings: Queues, talk: deque[float],
                 asterisk: Asterisk) -> None:
        self.rng = rng
        self.calls = calls
        self.settings = settings
        self.now = 0.0
        self.events: list[tuple[float, int, Callable[..., None], tuple[object, ...]]] = []
        self.sequence = 0
        self.agents = [Agent() for _ in range(AGENTS)]
        self.waiting: list[Caller] = []
        self.talk = talk
        self.asterisk = asterisk
        sigma = math.sqrt(math.log(1 + TALK_CV ** 2))
        self.talk_mu, self.talk_sigma = math.log(TALK_MEAN) - sigma ** 2 / 2, sigma

    def run(self) -> list[Caller]:
        callers = [Caller(t, self.rng.exponential(PATIENCE_MEAN)) for t in self.arrivals()]
        for hours, staffed in SHIFTS:
            self.at(hours * 3600, self.shift, staffed)
        for caller in callers:
            self.at(caller.arrived, self.arrive, caller)
        while self.events:
            self.now, _, action, arguments = heapq.heappop(self.events)
            action(*arguments)
        return callers

    def arrivals(self) -> list[float]:
        """A Poisson process on the daily curve, by thinning one at the peak rate."""
        scale = self.calls / (sum(HOURLY_VOLUME) * 3600)
        peak = max(HOURLY_VOLUME) * scale
        times, t = [], 0.0
        while (t := t + self.rng.exponential(1 / peak)) < DAY_SECONDS:
            rate = np.interp(t / 3600, np.arange(len(HOURLY_VOLUME)) + 0.5, HOURLY_VOLUME) * scale
            if self.rng.random() < rate / peak:
                times.append(t)
        return times

    def at(self, time: float, action: Callable[..., None], *arguments: object) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, action, arguments))

    # what happens

    def arrive(self, caller: Caller) -> None:
        self.waiting.append(caller)
        self.at(caller.arrived + caller.patience, self.hang_up, caller)
        self.distribute()
        self.announce(caller)

    def announce(self, caller: Caller) -> None:
        if caller not in self.waiting:
            return
        ahead = self.waiting.index(caller)
        staffed = sum(agent.on_shift and not agent.leaving for agent in self.agents)
        handle = handle_time(self.talk, self.settings.wrap_up_seconds, self.settings.default_handle_seconds)
        asterisk, minutes = self.asterisk.estimate(self.now - caller.arrived)
        caller.estimates.append(Estimate(self.now, ahead, estimate_wait(ahead, staffed, handle), asterisk, minutes))
        self.at(self.now + self.settings.announce_seconds, self.announce, caller)

    def hang_up(self, caller: Caller) -> None:
        if caller in self.waiting:
            self.waiting.remove(caller)
            self.asterisk.finish()

    def distribute(self) -> None:
        """First come, first served, each to the longest-idle agent."""
        while self.waiting:
            idle = [agent for agent in self.agents if agent.on_shift and not agent.busy and not agent.leaving]
            if not idle:
                return
            agent = min(idle, key=lambda a: a.idle_since)
            agent.busy = True
            self.at(self.now + self.rng.uniform(*RING_SECONDS), self.answer, self.waiting.pop(0), agent)

    def answer(self, caller: Caller, agent: Agent) -> None:
        caller.answered = self.now
        self.asterisk.answered(self.now - caller.arrived)
        talk = self.rng.lognormal(self.talk_mu, self.talk_sigma)
        self.at(self.now + talk, self.hang_up_agent, agent, talk)

    def hang_up_agent(self, agent: Agent, talk: float) -> None:
        self.talk.append(talk)
        self.asterisk.finish()
        self.at(self.now + self.settings.wrap_up_seconds, self.free, agent)

    def free(self, agent: Agent) -> None:
        agent.busy = False
        if agent.leaving:
            agent.on_shift = agent.leaving = False
        else:
            agent.idle_since = self.now
        self.distribute()

    def shift(self, staffed: int) -> None:
        """Agents start or end their shift: idle ones leave at once, busy ones after their call."""
        on = [agent for agent in self.agents if agent.on_shift and not agent.leaving]
        if len(on) > staffed:
            for agent in sorted(on, key=lambda a: a.busy)[:len(on) - staffed]:
                agent.leaving = agent.busy
                agent.on_shift = agent.busy
        else:  # those about to leave stay on first, then others come
            coming = [agent for agent in self.agents if agent.leaving] + [a for a in self.agents if not a.on_shift]
            for agent in coming[:staffed - len(on)]:
                if not agent.on_shift:
                    agent.idle_since = self.now
                agent.on_shift, agent.leaving = True, False
        self.distribute()


@dataclass
class Errors:
    """Estimate minus the true wait, with the callers ahead, of one method."""

    name: str
    errors: list[float] = field(default_factory=list)
    ahead: list[int] = field(default_factory=list)

    def add(self, error: float, ahead: int) -> None:
        self.errors.append(error)
        self.ahead.append(ahead)

    def row(self) -> str:
        error = np.array(self.errors)
        absolute = np.abs(error)
        return (f"{self.name:<20} {len(error):>9} {absolute.mean():>7.1f} {np.median(absolute):>8.1f} "
                f"{np.percentile(absolute, 90):>7.1f} {np.mean(absolute <= 60):>7.1%} {error.mean():>+7.1f} "
                f"{np.mean(error < -60):>8.1%}")

    def by_ahead(self) -> str:
        absolute, ahead = np.abs(np.array(self.errors)), np.array(self.ahead)
        cells = []
        for _, low, high in AHEAD_GROUPS:
            chosen = absolute[(ahead >= low) & (ahead <= high)]
            cells.append(f"{chosen.mean():.0f} ({len(chosen)})" if len(chosen) else "-")
        return f"{self.name:<20} " + " ".join(f"{cell:>12}" for cell in cells)


def compare(callers: list[Caller]) -> list[Errors]:
    methods = [Errors("Hotline estimate"), Errors("Hotline said"), Errors("Asterisk estimate"), Errors("Asterisk said")]
    for caller in callers:
        if caller.answered is None:
            continue
        for estimate in caller.estimates:
            true = caller.answered - estimate.at
            said = (estimate.hotline, spoken_minutes(estimate.hotline) * 60,
                    estimate.asterisk, estimate.asterisk_minutes * 60)
            for method, value in zip(methods, said):
                method.add(value - true, estimate.ahead)
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=int, default=1, help="days simulated, one after another (figures pooled)")
    parser.add_argument("--calls", type=float, default=450, help="expected calls a day")
    args = parser.parse_args()
    settings = Queues()
    rng = np.random.default_rng(args.seed)
    talk: deque[float] = deque(maxlen=settings.recent_calls)
    asterisk = Asterisk()
    callers = [caller for _ in range(args.days) for caller in Day(rng, args.calls, settings, talk, asterisk).run()]
    answered = [caller for caller in callers if caller.answered is not None]
    waits = np.array([caller.answered - caller.arrived for caller in answered])
    queued = [caller for caller in callers if caller.estimates]
    print(f"{args.days} day(s), seed {args.seed}: {len(callers)} calls, {len(answered)} answered, "
          f"{len(callers) - len(answered)} hung up waiting, {len(queued)} found no free agent")
    print(f"wait until answered: mean {waits.mean():.0f} s, p90 {np.percentile(waits, 90):.0f} s, "
          f"longest {waits.max():.0f} s; announcements every {settings.announce_seconds:g} s, "
          f"wrap-up {settings.wrap_up_seconds:g} s")
    methods = compare(callers)
    print(f"\n{'method':<20} {'estimates':>9} {'MAE s':>7} {'median':>8} {'p90':>7} {'±60 s':>7} {'bias s':>7} "
          f"{'short>60':>8}")
    for method in methods:
        print(method.row())
    groups = " ".join(f"{name:>12}" for name, _, _ in AHEAD_GROUPS)
    print(f"\nmean absolute error, s (estimates), by callers ahead\n{'method':<20} {groups}")
    for method in methods:
        print(method.by_ahead())


if __name__ == "__main__":
    main()

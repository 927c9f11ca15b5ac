"""Rise/fall state of one (backend, check): turns probe outcomes into up/down transitions."""

from __future__ import annotations

from dataclasses import dataclass

from vgw.events import BackendState
from vgw.probes import Outcome


@dataclass(frozen=True, slots=True)
class Transition:
    previous: BackendState
    current: BackendState
    outcome: Outcome
    consecutive: int


@dataclass
class CheckState:
    rise: int
    fall: int
    state: BackendState = BackendState.UNKNOWN
    successes: int = 0
    failures: int = 0

    def observe(self, outcome: Outcome) -> Transition | None:
        """Record one outcome; return the transition it causes, if any.

        From ``unknown`` the first result decides, so a new backend is usable (or known broken)
        after one probe; afterwards ``rise`` successes or ``fall`` failures in a row are needed.
        """
        if outcome.local:
            return None  # not about the backend: neither a success nor a failure
        if outcome.ok:
            self.successes += 1
            self.failures = 0
            needed, target, count = self.rise, BackendState.UP, self.successes
        else:
            self.failures += 1
            self.successes = 0
            needed, target, count = self.fall, BackendState.DOWN, self.failures
        if self.state is target:
            return None
        if self.state is BackendState.UNKNOWN or count >= needed:
            previous, self.state = self.state, target
            return Transition(previous, target, outcome, count)
        return None

    @property
    def transitioning(self) -> bool:
        """The last results disagree with the state: probe at the fast interval until decided."""
        if self.state is BackendState.UP:
            return self.failures > 0
        if self.state is BackendState.DOWN:
            return self.successes > 0
        return True

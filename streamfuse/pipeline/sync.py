"""Pairing IR and visible frames by timestamp: offset, tolerance, one partner per frame.

IR time + ``offset`` = visible time. Two frames pair when their times (IR shifted by the
offset) differ by at most ``tolerance`` and each is the other's nearest candidate; a frame that
cannot get a partner is dropped and counted. Pairs come out in time order and no frame is used
twice, so streams at different rates (30 and 25 fps) pair frame-accurately: every frame of the
slower stream meets its nearest frame of the faster one.

:class:`Synchroniser` is plain bookkeeping, with no threads or clocks: the runner feeds it frames
from the side it asks for (:meth:`Synchroniser.needs`) and takes the pairs out.
"""

from __future__ import annotations

import collections

from streamfuse.pipeline.frames import Frame, FramePair

IR, VIS = "ir", "vis"


def default_tolerance(ir_fps: float | None, vis_fps: float | None) -> float:
    """Half the frame interval of the slower stream (seconds); 1/60 s when no rate is known."""
    rates = [fps for fps in (ir_fps, vis_fps) if fps and fps > 0]
    return 0.5 / min(rates) if rates else 1 / 60


class Synchroniser:
    """Streaming one-to-one matcher of two time-ordered frame streams.

    Decision rule for the two oldest waiting frames ``a`` (IR) and ``b`` (visible), with
    ``d = a.t + offset - b.t``: if ``d < -tolerance``, ``a`` is older than anything it could still
    meet and is dropped (likewise ``b`` if ``d > tolerance``). Otherwise the one that is earlier
    is kept only if the other stream's next frame is not closer to it (the later one's neighbour
    cannot be closer, frames being ordered); that needs one frame of look-ahead on the earlier
    side, which :meth:`needs` asks for. Ties keep the earlier frame.
    """

    def __init__(self, offset: float = 0.0, tolerance: float = 1 / 60):
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance}")
        self.offset = offset
        self.tolerance = tolerance
        self.pending = {IR: collections.deque(), VIS: collections.deque()}
        self.ended = {IR: False, VIS: False}
        self.unpaired = {IR: 0, VIS: 0}
        self.pairs_made = 0

    def push(self, side: str, frame: Frame) -> None:
        self.pending[side].append(frame)

    def end(self, side: str) -> None:
        """No more frames will come from ``side``."""
        self.ended[side] = True

    @property
    def finished(self) -> bool:
        """True when no further pair can be made (a side ended and has nothing left waiting)."""
        return any(self.ended[side] and not self.pending[side] for side in (IR, VIS))

    def _time(self, side: str, frame: Frame) -> float:
        return frame.timestamp + self.offset if side == IR else frame.timestamp

    def _drop(self, side: str) -> None:
        self.pending[side].popleft()
        self.unpaired[side] += 1

    def needs(self) -> str | None:
        """Which side must deliver a frame before more pairs can be decided (None: neither)."""
        for side in (IR, VIS):
            if not self.pending[side] and not self.ended[side]:
                return side
        if self.finished:
            return None
        gap = self._time(IR, self.pending[IR][0]) - self._time(VIS, self.pending[VIS][0])
        if abs(gap) > self.tolerance:
            return None
        earlier = IR if gap < 0 else VIS
        if len(self.pending[earlier]) < 2 and not self.ended[earlier]:
            return earlier
        return None

    def pop_pairs(self) -> list[FramePair]:
        """Every pair that can be decided with the frames received so far, in time order."""
        pairs = []
        while self.pending[IR] and self.pending[VIS]:
            ir_frame, vis_frame = self.pending[IR][0], self.pending[VIS][0]
            gap = self._time(IR, ir_frame) - self._time(VIS, vis_frame)
            if gap < -self.tolerance:
                self._drop(IR)
                continue
            if gap > self.tolerance:
                self._drop(VIS)
                continue
            earlier, later_frame = (IR, vis_frame) if gap < 0 else (VIS, ir_frame)
            later_side = VIS if earlier == IR else IR
            queue = self.pending[earlier]
            if len(queue) < 2:
                if not self.ended[earlier]:
                    break  # the earlier side's next frame might be closer: wait for it
            else:
                target = self._time(later_side, later_frame)
                if abs(self._time(earlier, queue[1]) - target) < abs(self._time(earlier, queue[0]) - target):
                    self._drop(earlier)
                    continue
            self.pending[IR].popleft()
            self.pending[VIS].popleft()
            pairs.append(FramePair(ir=ir_frame, vis=vis_frame, seq=self.pairs_made))
            self.pairs_made += 1
        self._drop_leftovers()
        return pairs

    def _drop_leftovers(self) -> None:
        """Once one side is over, the other side's waiting frames can never pair."""
        for side, other in ((IR, VIS), (VIS, IR)):
            if self.ended[other] and not self.pending[other]:
                while self.pending[side]:
                    self._drop(side)

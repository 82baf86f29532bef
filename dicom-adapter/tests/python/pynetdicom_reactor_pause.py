"""A fix for a race in pynetdicom's association reactor (3.0.4 and its main branch as of 2026).

Every `Association.send_*` pauses the association's reactor thread before it sends a request, so
that the reactor does not take the response off the DIMSE queue:

    self._reactor_checkpoint.clear()
    while not self._is_paused:
        time.sleep(0.0001)
    self.dimse.send_msg(req, ...)
    rsp = self.dimse.get_msg(block=True)
    self._reactor_checkpoint.set()

and the reactor loop does

    self._is_paused = True
    self._reactor_checkpoint.wait()
    self._is_paused = False
    msg = self.dimse.get_msg(block=False)   # a message here goes to _serve_request

`_is_paused` is stale between `set()` waking the reactor and the reactor running its next line.
When the next `send_c_store` clears the checkpoint inside that window, it reads the stale `True`,
sends, and the reactor — now running — takes the response: pynetdicom logs "Received unexpected
C-STORE service message" from the reactor thread, and the sender waits for a response that already
came until its DIMSE timeout. Under 16 loaded processes on two cores this happened in about one run
of the 16x200 load in four (docs/conformance.md, "Load test"); the server had answered every
instance, and the answer was on the wire.

The fix makes `_is_paused` mean what the senders need: the reactor is blocked in `wait()` on the
cleared checkpoint. A thread waiting on an `Event` is registered with the event's condition until
`set()` notifies it, and only the reactor ever waits on the checkpoint, so that registration is
the flag. The reactor's own writes to `_is_paused` are ignored.

`kill()` sets the checkpoint and `_is_paused = True` to stop the loop, which releases a sender
spinning on the flag; here a killed association, or one whose reactor thread has ended, counts as
paused for the same reason.
"""

from pynetdicom.association import Association


def _reactor_is_paused(association):
    """True while the reactor thread is blocked on the cleared checkpoint."""
    if association._kill or not association.is_alive():
        return True
    checkpoint = association._reactor_checkpoint
    with checkpoint._cond:
        return not checkpoint.is_set() and len(checkpoint._cond._waiters) > 0


def _ignore_reactor_write(association, value):
    """The reactor's own `_is_paused = ...` lines: the property above supersedes them."""


def install():
    """Patches pynetdicom's Association class; call once before associating."""
    Association._is_paused = property(_reactor_is_paused, _ignore_reactor_write)

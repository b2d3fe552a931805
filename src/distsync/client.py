"""The lock client: :class:`AsyncClient`, and :class:`Client`, which drives it from any thread.

One implementation (STYLE 9): :class:`AsyncClient` holds all the logic; :class:`Client`
runs one on a private event loop in a background thread and waits for its coroutines.

How requests reach the cluster
------------------------------
- **Leader finding.** One connection per node address, opened when first needed. A
  request goes to the node last known to lead; a ``not_leader`` answer (or a dropped
  connection, a timeout) moves it on to the next address, so a redirect costs at most one
  round over the cluster.
- **Exactly once.** Every command that changes state (open/close a session, acquire,
  release, cancel) carries this client's id and its own ``sequence``; a retry after a
  leader loss sends the very same payload, and the nodes' deduplication applies it once.
  Each command also says the lowest sequence still unanswered (``first_unacked``), so
  the nodes may forget the results the client has seen.
- **Sessions.** Locks are held by sessions (DESIGN §5), kept alive here in the
  background every ``session_ttl / 3``; if the client dies, the leader expires them after
  the ttl and the locks go to the next waiters. A session is one thread of control: it
  waits for one lock at a time, which is what makes deadlock detection exact. So each
  worker -- a thread for :class:`Client`, a task for :class:`AsyncClient` -- gets its own
  session while it holds or waits for something, taken from a pool of idle sessions.
  A process with many workers is best served by one client they share: its one
  connection to the leader carries every worker's requests, a write per batch rather
  than per request on both sides (64 workers, 2 cores: ~1.4x the pairs/s of 64
  clients; ``distsync bench locks --shared-client``).
- **Waiting.** An acquire that queues is answered by the leader when the lock is handed
  over (no polling); ``timeout=`` travels with it, so the leader removes the waiter when it
  passes. If the answer does not come in time anyway (a lost leader, say), the client
  withdraws the wait itself and raises :class:`~distsync.errors.LockTimeout`.
- **Giving up never leaves a lock behind.** Whenever an acquire ends without handing the
  caller a grant -- its timeout, no leader reachable, the calling task cancelled (or
  ``asyncio.wait_for`` around it), the calling thread interrupted -- the client cancels
  the wait, or releases the lock if the grant won the race, retrying in the background
  until a leader answers; the session serves no other acquire meanwhile. So a lock the
  caller was told it did not get is never held in its name.
- **Abandoned waits.** A leader withdraws a queued acquire whose connection closed and
  was not replaced within one election timeout (see :mod:`distsync.lock`). The client
  re-sends a waiting acquire as soon as its connection drops; if it was too late and
  hears that the wait ended before its timeout, it queues again (at the tail).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from distsync.errors import AuthError, ClusterUnavailable, DistSyncError, LockTimeout
from distsync.lock import LockStatus, Mode, effect_from_wire
from distsync.net.auth import load_secret
from distsync.net.envelope import Envelope, MsgIdGenerator
from distsync.net.transport import Connection, ConnectionPool

__all__ = ["AsyncClient", "AsyncLockGrant", "Client", "LockGrant"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Error codes after which the same request is sent again, to the next node.
_RETRY_CODES = frozenset({"not_leader", "proposal_dropped", "unavailable"})

#: How long past an acquire's timeout the client waits for the leader's own verdict
#: before withdrawing the wait itself (the leader polls expiries every tick or two).
_TIMEOUT_GRACE = 1.0


#: Effects that answer a request as asked: no refusal to raise, nothing to build.
_AS_ASKED = frozenset({"grant", "released", "session_opened", "session_renewed"})


def _raise_refusal(wire: Any) -> None:
    """Raise the error of an answer that refuses (deadlock, rejected, timed out,
    cancelled); an answer granting what was asked passes without being decoded."""
    if type(wire) is dict and wire.get("effect") in _AS_ASKED:
        return
    effect = effect_from_wire(wire)
    if hasattr(effect, "error"):
        raise effect.error()


def _parse(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} must be host:port")
    return host.strip("[]"), int(port)


class _Session:
    """One lock session of this client; ``busy`` counts its grants and its wait.
    ``withdrawing``: the background withdrawal of an acquire given up on it, which the
    session's next acquire waits for (a session waits for one lock at a time)."""

    __slots__ = ("id", "busy", "alive", "withdrawing")

    def __init__(self, sid: str) -> None:
        self.id = sid
        self.busy = 0
        self.alive = True
        self.withdrawing: asyncio.Task[None] | None = None


class AsyncLockGrant:
    """A held lock. ``fencing_token`` strictly increases per resource from one grant to
    the next: pass it to the storage the lock guards, which refuses older tokens.
    ``async with`` releases it on exit."""

    def __init__(
        self,
        client: AsyncClient,
        resource: str,
        mode: Mode,
        fencing_token: int,
        session: _Session,
        worker: object,
    ) -> None:
        self.resource = resource
        self.mode = mode
        self.fencing_token = fencing_token
        self.client_id = client.client_id
        self._client = client
        self._session = session
        self._worker = worker
        self.released = False

    @property
    def session_id(self) -> str:
        return self._session.id

    async def release(self, *, timeout: float | None = None) -> None:
        """Give the lock back (the next waiter gets it in the same log entry).

        :param timeout: seconds to reach the cluster (default: the client's ``timeout``).
        :raises InvalidRequest: the lock is no longer held by this grant (e.g. the session
            expired and the lock went to someone else).
        :raises ClusterUnavailable: no leader answered in time.
        """
        await self._client._release(self, timeout)

    async def __aenter__(self) -> AsyncLockGrant:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.released:
            await self.release()

    def __repr__(self) -> str:
        return (
            f"AsyncLockGrant({self.resource!r}, {self.mode.value}, "
            f"token={self.fencing_token}, client={self.client_id!r})"
        )


class AsyncClient:
    """A connection to a distsync cluster for locks, on the running event loop.

    :param addresses: ``"host:port"`` of the cluster's nodes (any subset that includes a
        reachable majority will do), as a list or one comma-separated string.
    :param client_id: this client's id, shown in ``lock_status`` and deadlock cycles
        (default: a new unique one).
    :param session_ttl: seconds a session outlives its last keepalive; a dead client's
        locks are freed this long after it died.
    :param secret: the cluster secret (default: ``$DISTSYNC_SECRET``, else the
        development default, with a warning).
    :param timeout: default seconds to reach the cluster for requests that do not wait
        for a lock (and per reconnection attempt).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        client_id: str | None = None,
        session_ttl: float = 10.0,
        secret: bytes | str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if isinstance(addresses, str):
            # "host:port" or the "host:port,host:port" form of the command line.
            addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        if not addresses:
            raise ValueError("give at least one node address")
        if session_ttl <= 0 or timeout <= 0:
            raise ValueError("session_ttl and timeout must be > 0")
        self._addresses = [_parse(a) for a in addresses]
        self._client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
        self.session_ttl = float(session_ttl)
        self.timeout = float(timeout)
        self._secret = load_secret(secret)
        self._ids = MsgIdGenerator(self._client_id)
        self._pool: ConnectionPool[int] = ConnectionPool(self._ids, self._secret)
        self._leader = 0
        self._seq = itertools.count(1)
        self._open_seqs: set[int] = set()
        self._session_numbers = itertools.count(1)
        self._request_numbers = itertools.count(1)
        self._sessions: list[_Session] = []
        self._idle: list[_Session] = []
        self._by_worker: dict[object, _Session] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self._withdrawals: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def client_id(self) -> str:
        """This client's id (unique per client; what ``lock_status`` lists)."""
        return self._client_id

    # -- locks ---------------------------------------------------------------------------------

    async def acquire(
        self, resource: str, mode: str | Mode = "exclusive", timeout: float | None = None
    ) -> AsyncLockGrant:
        """Take ``resource`` in ``mode`` (``"shared"`` or ``"exclusive"``), waiting in FIFO
        order behind earlier requests.

        :param timeout: seconds to wait for the lock (None: as long as it takes; 0: try
            once, never queue).
        :returns: the grant, with its ``fencing_token``.
        :raises LockTimeout: not granted within ``timeout`` (the wait is withdrawn).
        :raises DeadlockError: waiting would close a cycle; ``.cycle`` names the clients.
        :raises InvalidRequest: e.g. this task already holds ``resource``.
        :raises ClusterUnavailable: no leader could be reached.
        """
        return await self._acquire(resource, mode, timeout, _task_worker())

    @contextlib.asynccontextmanager
    async def lock(
        self, resource: str, mode: str | Mode = "exclusive", timeout: float | None = None
    ) -> AsyncIterator[AsyncLockGrant]:
        """``async with client.lock(name, timeout=5.0) as grant:`` -- :meth:`acquire`, then
        release on exit. Same parameters and errors as :meth:`acquire`."""
        grant = await self._acquire(resource, mode, timeout, _task_worker())
        try:
            yield grant
        finally:
            if not grant.released:
                await grant.release()

    async def lock_status(self, resource: str, *, timeout: float | None = None) -> LockStatus:
        """Who holds and who waits for ``resource``: a linearizable read on the leader.

        :param timeout: seconds to reach the cluster (default: the client's ``timeout``).
        :returns: ``.mode`` (None when free), ``.holders`` and ``.waiters`` (client ids, in
            grant and queue order), ``.fencing_token`` (newest among the holders, 0 if free).
        :raises ClusterUnavailable: no leader answered in time.
        """
        reply = await self._call("lock_status", {"resource": resource}, self._deadline(timeout))
        mode = reply.get("mode")
        return LockStatus(
            str(reply.get("resource", resource)),
            None if mode is None else Mode(mode),
            tuple(reply.get("holders", ())),
            tuple(reply.get("waiters", ())),
            int(reply.get("fencing_token", 0)),
        )

    async def _acquire(
        self, resource: str, mode: str | Mode, timeout: float | None, worker: object
    ) -> AsyncLockGrant:
        mode = Mode(mode)
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        start = time.monotonic()
        end = None if timeout is None else start + timeout
        session = self._session_in_hand(worker) or await self._session_for(
            worker, self._deadline(None)
        )
        # The leader times the wait out on its clock; the client gives it a little
        # longer to say so before it gives up on its own.
        deadline = None if end is None else end + _TIMEOUT_GRACE
        rid = 0
        try:
            if session.withdrawing is not None:
                # The session's last acquire was given up and is being withdrawn: this
                # one must not find it still waiting (or holding what it got meanwhile).
                limit = self._deadline(None) if deadline is None else deadline
                done, _ = await asyncio.wait(
                    {session.withdrawing}, timeout=max(0.0, limit - time.monotonic())
                )
                if not done:
                    raise ClusterUnavailable(
                        f"acquiring {resource!r}: the session's previous acquire is still "
                        "being withdrawn (no leader answers)"
                    )
            wait_for = timeout
            while True:
                rid = next(self._request_numbers)
                payload: dict[str, Any] = {
                    "resource": resource,
                    "mode": mode.value,
                    "session_id": session.id,
                    "request_id": rid,
                    "timeout": wait_for,
                }
                reply = await self._call("lock_acquire", payload, deadline, sequenced=True)
                wire = reply["effect"]
                kind, now = wire.get("effect"), time.monotonic()
                if (end is None or now < end) and (
                    kind == "timed_out"
                    or (kind == "cancelled" and wire.get("reason") == "cancelled")
                ):
                    # Not our timeout (it has not passed) nor our cancel (we send one only
                    # after giving up): the leader withdrew the wait while our connection
                    # was down too long (abandoned, see distsync.lock). Queue again.
                    wait_for = None if end is None else end - now
                    continue
                _raise_refusal(wire)
                token = int(wire["token"])
                break
        except (ClusterUnavailable, asyncio.CancelledError) as exc:
            if not rid:
                self._done_with(session, worker)
                raise
            # Given up with acquire ``rid`` out -- no leader answered, the caller gave up
            # (a cancelled task, wait_for, an interrupted thread), or the timeout passed
            # without the leader's verdict: its wait, or the lock if the grant won the
            # race, must not outlive this call. Withdrawn in the background, as this task
            # may not await any more.
            task = self._withdraw_later(resource, session, worker, rid)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if deadline is None or time.monotonic() < deadline:
                raise
            # Our timeout: raised once the wait is gone, in the common case.
            await asyncio.wait({task}, timeout=min(self.timeout, 2.0) + 0.5)
            raise LockTimeout(f"acquiring {resource!r} timed out after {timeout}s") from None
        except BaseException:
            self._done_with(session, worker)
            raise
        return AsyncLockGrant(self, resource, mode, token, session, worker)

    async def _withdraw(self, resource: str, session: _Session, rid: int) -> bool:
        """After giving up on acquire ``rid``: cancel its wait, or release the lock if the
        grant won the race (the session cannot have held ``resource`` before: no
        re-entrancy), so nothing is left behind for the others. Returns whether the
        cluster answered, i.e. whether nothing of it can be left."""
        deadline = time.monotonic() + min(self.timeout, 2.0)
        base = {"resource": resource, "session_id": session.id}
        try:
            reply = await self._call(
                "lock_release", {**base, "cancel": rid}, deadline, sequenced=True
            )
            if reply["effect"].get("code") == "not_waiting":
                await self._call("lock_release", base, deadline, sequenced=True)
        except ClusterUnavailable:
            return False
        except DistSyncError as exc:
            # Refused for good (the session is gone, say): nothing is left to withdraw.
            log.warning("client %s: withdrawing %r: %s", self._client_id, resource, exc)
        return True

    def _withdraw_later(
        self, resource: str, session: _Session, worker: object, rid: int
    ) -> asyncio.Task[None]:
        """Withdraw acquire ``rid`` in the background until the cluster answers; the
        session stays taken (its ``busy`` count) until then, and its next acquire waits."""

        async def run() -> None:
            try:
                while not self._closed and not await self._withdraw(resource, session, rid):
                    await asyncio.sleep(0.1)
            finally:
                if session.withdrawing is asyncio.current_task():
                    session.withdrawing = None
                self._done_with(session, worker)

        task = asyncio.get_running_loop().create_task(
            run(), name=f"distsync-withdraw-{session.id}-{rid}"
        )
        session.withdrawing = task
        self._withdrawals.add(task)
        task.add_done_callback(self._withdrawals.discard)
        return task

    async def _release(self, grant: AsyncLockGrant, timeout: float | None) -> None:
        if grant.released:
            return
        payload = {
            "resource": grant.resource,
            "session_id": grant.session_id,
            "token": grant.fencing_token,
        }
        try:
            reply = await self._call(
                "lock_release", payload, self._deadline(timeout), sequenced=True
            )
        except ClusterUnavailable:
            raise
        grant.released = True
        self._done_with(grant._session, grant._worker)
        _raise_refusal(reply["effect"])

    # -- sessions ------------------------------------------------------------------------------

    def _session_in_hand(self, worker: object) -> _Session | None:
        """:meth:`_session_for` without opening a session (so without a coroutine): the
        worker's session or an idle one, its ``busy`` count taken; None if neither."""
        if self._closed:
            return None
        s = self._by_worker.get(worker)
        if s is None or not s.alive:
            while self._idle and not self._idle[-1].alive:
                self._idle.pop()
            if not self._idle:
                return None
            s = self._idle.pop()
            self._by_worker[worker] = s
        s.busy += 1
        return s

    async def _session_for(self, worker: object, deadline: float | None) -> _Session:
        """The worker's session while it holds or waits for something, else an idle one
        (or a new one); its ``busy`` count is taken for the caller."""
        if self._closed:
            raise ClusterUnavailable("the client is closed")
        s = self._session_in_hand(worker)
        if s is None:
            s = await self._open_session(deadline)
            self._by_worker[worker] = s
            s.busy += 1
        return s

    def _done_with(self, s: _Session, worker: object) -> None:
        s.busy -= 1
        if s.busy <= 0:
            s.busy = 0
            if self._by_worker.get(worker) is s:
                del self._by_worker[worker]
            if s.alive and s not in self._idle:
                self._idle.append(s)

    async def _open_session(self, deadline: float | None) -> _Session:
        s = _Session(f"{self._client_id}/s{next(self._session_numbers)}")
        reply = await self._call(
            "session_open",
            {"session_id": s.id, "ttl": self.session_ttl},
            deadline,
            sequenced=True,
        )
        _raise_refusal(reply["effect"])
        self._sessions.append(s)
        if self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(
                self._keep_alive(), name=f"distsync-keepalive-{self._client_id}"
            )
        return s

    async def _keep_alive(self) -> None:
        """Renew every session each ttl/3: two keepalives may be lost before one expires."""
        period = self.session_ttl / 3
        while not self._closed:
            await asyncio.sleep(period)
            live = [s for s in self._sessions if s.alive]
            results = await asyncio.gather(
                *(
                    self._call(
                        "session_keepalive",
                        {"session_id": s.id},
                        time.monotonic() + period,
                    )
                    for s in live
                ),
                return_exceptions=True,
            )
            for s, r in zip(live, results, strict=True):
                if isinstance(r, dict) and r.get("effect", {}).get("code") == "no_session":
                    # Expired (the client was cut off too long): its locks are gone.
                    s.alive = False
                    log.warning("client %s: session %s expired", self._client_id, s.id)
                elif isinstance(r, BaseException) and not isinstance(r, DistSyncError):
                    log.warning("client %s: keepalive failed: %r", self._client_id, r)
            self._sessions = [s for s in self._sessions if s.alive]

    # -- requests ------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    async def _conn(self, k: int, timeout: float) -> Connection:
        return await self._pool.get(k, self._addresses[k], timeout)

    async def _call(
        self,
        msg_type: str,
        payload: dict[str, Any],
        deadline: float | None,
        *,
        sequenced: bool = False,
    ) -> dict[str, Any]:
        """Send one request to the leader, following redirects and retrying the same
        payload (same sequence) until ``deadline`` (None: no end while nodes answer; a
        cluster unreachable for ``timeout`` seconds raises anyway).

        One coroutine for the whole request, retries included: every coroutine between
        the caller and the connection's future is crossed again when the answer wakes the
        task, so the sending loop is not a coroutine of its own."""
        seq = 0
        if sequenced:
            seq = next(self._seq)
            self._open_seqs.add(seq)
            payload = {**payload, "seq": seq, "first_unacked": min(self._open_seqs)}
        n = len(self._addresses)
        last: BaseException | None = None
        failing_since: float | None = None
        tried = 0
        try:
            while True:
                now = time.monotonic()
                left = None if deadline is None else deadline - now
                if failing_since is not None and now - failing_since > self.timeout:
                    left = 0.0  # unreachable for too long, whatever the deadline
                if left is not None and left <= 0:
                    raise ClusterUnavailable(
                        f"{msg_type} not answered in time (last error: {last})"
                    )
                if self._closed:
                    raise ClusterUnavailable("the client is closed")
                k = self._leader
                attempt_start = now
                try:
                    conn = self._pool.ready(k) or await self._conn(k, min(left or 2.0, 2.0))
                    env = Envelope.make(self._ids, msg_type, conn.peer_id or "", payload)
                    reply = await conn.request(env, left)
                    return reply.payload
                except AuthError:
                    raise
                except (DistSyncError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                    code = getattr(exc, "code", "unavailable")
                    if isinstance(exc, DistSyncError) and code not in _RETRY_CODES:
                        raise
                    last = exc
                    # A request that was being served a while (a queued acquire) and then
                    # lost its leader starts a new unreachable period, not an old one's.
                    if failing_since is None or time.monotonic() - attempt_start > 1.0:
                        failing_since = time.monotonic()
                    # Next node: where a follower's redirect points, else the next address
                    # (a dead leader, an unreachable node, a follower that knows no leader).
                    self._leader = self._hinted(exc, k)
                    tried += 1
                    if code == "not_leader" and tried % n:
                        continue
                    # A whole round without a leader: an election is probably under way.
                    await asyncio.sleep(0.05)
        finally:
            if sequenced:
                self._open_seqs.discard(seq)

    def _hinted(self, exc: BaseException, k: int) -> int:
        details = getattr(exc, "details", None)
        addr = details.get("leader_addr") if isinstance(details, dict) else None
        if isinstance(addr, str):
            with contextlib.suppress(ValueError):
                hint = _parse(addr)
                if hint in self._addresses and self._addresses.index(hint) != k:
                    return self._addresses.index(hint)
        return (k + 1) % len(self._addresses)

    # -- life cycle ----------------------------------------------------------------------------

    async def close(self, *, timeout: float | None = None) -> None:
        """Close the sessions (their locks are released at once rather than after the
        ttl) and the connections. Idempotent.

        :param timeout: seconds to spend closing sessions (default: the client's
            ``timeout``, at most 5 s); sessions not closed in time expire later.
        """
        if self._closed:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keepalive
        deadline = self._deadline(min(timeout or self.timeout, 5.0))
        await asyncio.gather(
            *(
                self._call("session_close", {"session_id": s.id}, deadline, sequenced=True)
                for s in self._sessions
                if s.alive
            ),
            return_exceptions=True,
        )
        self._closed = True
        # Closing the sessions withdrew whatever a background withdrawal was after.
        for task in list(self._withdrawals):
            task.cancel()
        await self._pool.close(2.0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _task_worker() -> object:
    # The current task is the async "thread of control" that owns a session.
    task = asyncio.current_task()
    return ("task", id(task))


class LockGrant:
    """A held lock (sync): ``fencing_token``, ``resource``, ``mode``; :meth:`release`, or
    ``with`` to release on exit."""

    def __init__(self, client: Client, inner: AsyncLockGrant) -> None:
        self._client = client
        self._inner = inner
        self.resource = inner.resource
        self.mode = inner.mode
        self.fencing_token = inner.fencing_token
        self.client_id = inner.client_id

    @property
    def session_id(self) -> str:
        return self._inner.session_id

    @property
    def released(self) -> bool:
        return self._inner.released

    def release(self, *, timeout: float | None = None) -> None:
        """Give the lock back. Parameters and errors as :meth:`AsyncLockGrant.release`."""
        self._client._run(self._inner.release(timeout=timeout))

    def __enter__(self) -> LockGrant:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.released:
            self.release()

    def __repr__(self) -> str:
        return (
            f"LockGrant({self.resource!r}, {self.mode.value}, "
            f"token={self.fencing_token}, client={self.client_id!r})"
        )


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """The private loop of a :class:`Client`: uvloop's when installed (an optional
    extra), whose calls from other threads and socket reads and writes cost less on every
    request than the default loop's (each blocking call crosses to the loop thread and
    back), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Client:
    """The blocking client: the same API as :class:`AsyncClient`, usable from any number
    of threads (each thread is its own thread of control for locks). It runs an
    :class:`AsyncClient` on a private event loop in a daemon thread.

    Parameters as :class:`AsyncClient`.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        client_id: str | None = None,
        session_ttl: float = 10.0,
        secret: bytes | str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._async = AsyncClient(
            addresses,
            client_id=client_id,
            session_ttl=session_ttl,
            secret=secret,
            timeout=timeout,
        )
        self._loop = _new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever,
            name=f"distsync-client-{self._async.client_id}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def client_id(self) -> str:
        """This client's id (unique per client; what ``lock_status`` lists)."""
        return self._async.client_id

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClusterUnavailable("the client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            # Interrupted here (KeyboardInterrupt, say): the call is given up, so it is
            # cancelled on the loop too (an acquire then withdraws its wait).
            fut.cancel()
            raise

    def acquire(
        self, resource: str, mode: str | Mode = "exclusive", timeout: float | None = None
    ) -> LockGrant:
        """Take ``resource``; see :meth:`AsyncClient.acquire` (same parameters, returns and
        errors). Each calling thread has its own session."""
        worker = ("thread", threading.get_ident(), os.getpid())
        inner = self._run(self._async._acquire(resource, mode, timeout, worker))
        return LockGrant(self, inner)

    @contextlib.contextmanager
    def lock(
        self, resource: str, mode: str | Mode = "exclusive", timeout: float | None = None
    ) -> Iterator[LockGrant]:
        """``with client.lock(name, timeout=5.0) as grant:`` -- :meth:`acquire`, then
        release on exit. Same parameters and errors as :meth:`AsyncClient.acquire`."""
        grant = self.acquire(resource, mode, timeout)
        try:
            yield grant
        finally:
            if not grant.released:
                grant.release()

    def lock_status(self, resource: str, *, timeout: float | None = None) -> LockStatus:
        """See :meth:`AsyncClient.lock_status`."""
        return self._run(self._async.lock_status(resource, timeout=timeout))

    def close(self, *, timeout: float | None = None) -> None:
        """Close the sessions (releasing their locks) and connections, stop the loop
        thread. Idempotent. ``timeout`` as :meth:`AsyncClient.close`."""
        if self._closed:
            return
        try:
            self._run(self._async.close(timeout=timeout))
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

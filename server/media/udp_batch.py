"""Many datagrams, one system call: a fan-out's copies leave through sendmmsg(2).

One talker packet becomes N listener copies, all on the server's shared media socket
(server/media/media_port.py). Sent one sendto at a time, each copy pays a system call, the
socket module's address parsing and a walk into the socket's state; queued here and sent
with one sendmmsg, they pay that once per packet.

The batch holds pointers, not bytes: each entry is a caller's packet buffer (a
ListenerOutput's, built and SRTP-protected in place) and the destination's sockaddr,
which the caller keeps alive until flush(). Entries are written with struct.pack_into
into the C arrays, which costs less than cffi's field access.

Linux only (sendmmsg); elsewhere `Outbox.supported` is False and callers send each copy
themselves.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys

import cffi

logger = logging.getLogger(__name__)

_ffi = cffi.FFI()
_ffi.cdef(
    """
    struct iovec { void *iov_base; size_t iov_len; };
    struct msghdr {
        void *msg_name; unsigned int msg_namelen;
        struct iovec *msg_iov; size_t msg_iovlen;
        void *msg_control; size_t msg_controllen; int msg_flags;
    };
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
    int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
    """
)
try:
    _libc = _ffi.dlopen(None) if sys.platform.startswith("linux") else None
    _sendmmsg = _libc.sendmmsg if _libc is not None else None
except (OSError, AttributeError):
    _sendmmsg = None

_MSG_SIZE = _ffi.sizeof("struct mmsghdr")
_IOV_SIZE = _ffi.sizeof("struct iovec")
_NAME_AT = _ffi.offsetof("struct mmsghdr", "msg_hdr") + _ffi.offsetof("struct msghdr", "msg_name")
_NAMELEN_AT = _ffi.offsetof("struct mmsghdr", "msg_hdr") + _ffi.offsetof("struct msghdr", "msg_namelen")
_pointer_and_size = struct.Struct("@PN")  # (void *, size_t): an iovec
_pointer_and_uint = struct.Struct("@PI")  # (void *, unsigned int): msg_name, msg_namelen
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
MAX_BATCH = 1024  # Linux's UIO_MAXIOV: sendmmsg takes at most this many per call


def address_of(buffer: object) -> int:
    """The address of a cffi buffer, as an int for DatagramBatch.add()."""
    return int(_ffi.cast("uintptr_t", buffer))


class SocketAddress:
    """A destination as a C sockaddr, made once per (socket family, address) and kept by
    the sender for as long as it sends there."""

    __slots__ = ("address", "length", "packed", "_storage")

    def __init__(self, family: int, addr: tuple) -> None:
        if family == socket.AF_INET:
            packed = struct.pack("=H", socket.AF_INET) + struct.pack("!H", addr[1])
            packed += socket.inet_pton(socket.AF_INET, addr[0]) + bytes(8)
        elif family == socket.AF_INET6:
            flowinfo = addr[2] if len(addr) > 2 else 0
            scope = addr[3] if len(addr) > 3 else 0
            packed = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", addr[1], flowinfo)
            packed += socket.inet_pton(socket.AF_INET6, addr[0]) + struct.pack("=I", scope)
        else:
            raise ValueError(f"unsupported address family {family}")
        self.packed = packed
        self._storage = _ffi.new("char[]", packed)
        self.address = address_of(self._storage)
        self.length = len(packed)


class DatagramBatch:
    """The datagrams queued for one socket while its Outbox is open."""

    __slots__ = (
        "fd", "fd_cell", "fd_address", "count", "outbox", "_msgs", "_iovs", "_msg_view", "_iov_view", "_names",
        "sent", "dropped",
    )

    def __init__(self, sock: socket.socket, outbox: Outbox, capacity: int = 256) -> None:
        self.fd = sock.fileno()
        # The descriptor as a C int too: the C fan-out (server/media/fanout.c) reads it
        # per copy, so that close() stops it from writing to a number the system reuses.
        self.fd_cell = _ffi.new("int *", self.fd)
        self.fd_address = int(_ffi.cast("uintptr_t", self.fd_cell))
        self.outbox = outbox
        self.count = 0
        self.sent = 0
        self.dropped = 0
        self._names: list[SocketAddress] = []  # the queued entries' sockaddrs stay alive
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self._msgs = _ffi.new("struct mmsghdr[]", capacity)
        self._iovs = _ffi.new("struct iovec[]", capacity)
        self._msg_view = memoryview(_ffi.buffer(self._msgs))
        self._iov_view = memoryview(_ffi.buffer(self._iovs))
        # Each message has its own one-element iovec, for good: only lengths change.
        for i in range(capacity):
            self._msgs[i].msg_hdr.msg_iov = self._iovs + i
            self._msgs[i].msg_hdr.msg_iovlen = 1

    def close(self) -> None:
        """The socket is closing: nothing more leaves through this batch."""
        self.fd = self.fd_cell[0] = -1

    @property
    def capacity(self) -> int:
        return len(self._iovs)

    def add(self, buffer_address: int, length: int, name: SocketAddress) -> None:
        """Queue buffer[:length] for `name`. The buffer must stay alive and unchanged until
        the Outbox is flushed (the batch keeps `name` alive itself)."""
        count = self.count
        if count == 0:
            self.outbox.pending.append(self)
        elif count == len(self._iovs):
            if count >= MAX_BATCH:
                # Still pending: what comes after these goes with the flush.
                self.send()
                count = 0
            else:
                self._grow()
        _pointer_and_size.pack_into(self._iov_view, count * _IOV_SIZE, buffer_address, length)
        _pointer_and_uint.pack_into(self._msg_view, count * _MSG_SIZE + _NAME_AT, name.address, name.length)
        self._names.append(name)
        self.count = count + 1

    def _grow(self) -> None:
        old_count, old_iov = self.count, bytes(self._iov_view[: self.count * _IOV_SIZE])
        names = [bytes(self._msg_view[i * _MSG_SIZE + _NAME_AT : i * _MSG_SIZE + _NAMELEN_AT + 4])
                 for i in range(old_count)]
        self._allocate(min(MAX_BATCH, 2 * len(self._iovs)))
        self._iov_view[: len(old_iov)] = old_iov
        for i, name in enumerate(names):
            self._msg_view[i * _MSG_SIZE + _NAME_AT : i * _MSG_SIZE + _NAMELEN_AT + 4] = name

    def send(self) -> None:
        """Send what is queued. A full socket buffer drops the rest (as a network would);
        a datagram the kernel refuses (e.g. an unreachable address) is skipped."""
        count, done = self.count, 0
        self.count = 0
        names, self._names = self._names, []  # noqa: F841 - the sockaddrs, alive until sent
        while done < count:
            result = _sendmmsg(self.fd, self._msgs + done, count - done, _MSG_DONTWAIT)
            if result > 0:
                done += result
                self.sent += result
                continue
            error = _ffi.errno
            if error in (errno.EAGAIN, errno.ENOBUFS):
                self.dropped += count - done
                break
            if error == errno.EINTR:
                continue
            logger.debug("sendmmsg refused datagram %d of %d: %s", done, count, errno.errorcode.get(error, error))
            self.dropped += 1
            done += 1  # only the first of the remaining failed: skip it, send the others


class Outbox:
    """The process's batches: open() before a fan-out, flush() after it.

    While open, senders queue datagrams in their socket's batch; flush() sends every batch
    that has some and closes the outbox. Everything runs on the event loop's thread.
    """

    supported = _sendmmsg is not None

    def __init__(self) -> None:
        self.is_open = False
        self.pending: list[DatagramBatch] = []

    def batch_for(self, sock: socket.socket) -> DatagramBatch | None:
        """A batch for `sock`, or None where sendmmsg is unavailable."""
        return DatagramBatch(sock, self) if self.supported else None

    def open(self) -> None:
        self.is_open = True

    def flush(self) -> None:
        self.is_open = False
        pending = self.pending
        if pending:
            for batch in pending:
                batch.send()
            pending.clear()


OUTBOX = Outbox()
"""The server's one outbox: its fan-outs run one at a time on the event loop."""

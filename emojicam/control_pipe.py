r"""The Windows control channel: a named pipe guarded by a per-start key.

Named pipes live in one machine-wide namespace, so the name is per user,
``\\.\pipe\emojicam-<user>``, and guessable. What keeps another user (or a
program on another machine, which Windows lets open a pipe over the
network) out is the key: each daemon start writes 32 random bytes to
``control.key`` in the user's runtime folder (``%LOCALAPPDATA%\Temp\emojicam``,
inside the user's profile, whose permissions admit only that user, the
administrators and SYSTEM), and every connection begins with a mutual
challenge–response on it. A client proves it read the file; the daemon
proves it too, so a program that took the pipe name first cannot pose as
EmojiCam. The daemon removes the key when it stops.

The wire is ``multiprocessing.connection``: length-prefixed messages over a
named pipe (``AF_PIPE``), or over a Unix socket when the address is a file
path; that is how the tests run this very code on Linux. One JSON request per
message, answered by ``control.answer`` exactly as on the Unix socket.

Why the challenge is written here rather than taken from ``Listener(...,
authkey=...)``: the stdlib runs its handshake inside ``Listener.accept()``
and reads without a time limit, so one peer that connects and stays silent
(any local user may open the pipe for reading) would stall the channel for
everyone. Here ``accept`` only accepts; each connection is served on its own
thread, every read is bounded by ``REQUEST_TIMEOUT_S``, and at most
``MAX_CONNECTIONS`` are served at once. The check itself is the standard
HMAC-SHA256 over fresh random nonces from both sides (``hmac``, ``secrets``).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

from emojicam.control import (
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    REQUEST_TIMEOUT_S,
    TOO_LONG,
    ControlError,
    Handler,
    _ensure_private_dir,
    answer,
    connect_errors,
    parse_reply,
    runtime_dir,
)

log = logging.getLogger(__name__)

KEY_BYTES = 32
MAX_CONNECTIONS = 16
PIPE_PREFIX = "\\\\.\\pipe\\"
_HELLO = b"emojicam-control-1 "  # protocol name and version, then the daemon's nonce
_DENIED = b"denied"
_NONCE_BYTES = 32


def pipe_address(user: str | None = None) -> str:
    r"""``\\.\pipe\emojicam-<user>``: one name per user, since pipe names are
    machine-wide. Characters other than letters, digits and ``._-`` become
    ``_`` (a backslash would start a sub-path)."""
    if user is None:
        try:
            user = getpass.getuser()
        except (ImportError, KeyError, OSError):  # no USERNAME and no pwd module
            user = Path.home().name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in user)[:200] or "user"
    return f"{PIPE_PREFIX}emojicam-{safe}"


def key_path(folder: Path | None = None) -> Path:
    """``control.key`` in ``folder`` (default: the runtime folder, beside the
    instance lock)."""
    return (folder or runtime_dir()) / "control.key"


def write_key(path: Path) -> bytes:
    """A fresh random key, written so that no reader ever sees half of it
    (a private temporary file, then an atomic rename)."""
    key = secrets.token_bytes(KEY_BYTES)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".control.key.")  # 0600 where modes exist
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return key


def read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise ControlError(
            f"something answers on the control pipe but {path} is missing; restart EmojiCam"
        ) from None
    except OSError as exc:
        raise ControlError(f"cannot read the control key {path}: {exc}") from exc
    if len(key) != KEY_BYTES:
        raise ControlError(f"{path} is damaged ({len(key)} bytes, expected {KEY_BYTES}); restart EmojiCam")
    return key


# ---------------------------------------------------------------- the handshake


def _mac(key: bytes, role: bytes, daemon_nonce: bytes, client_nonce: bytes) -> bytes:
    # ``role`` differs for the two proofs, so neither side can reflect the other's
    return hmac.new(key, role + daemon_nonce + client_nonce, hashlib.sha256).digest()


def _recv(conn: Any, max_bytes: int, timeout_s: float) -> bytes | None:
    """One message of at most ``max_bytes``, or None when the peer is silent
    for ``timeout_s``; raises EOFError/OSError when it hangs up or sends more."""
    if not conn.poll(timeout_s):
        return None
    data: bytes = conn.recv_bytes(max_bytes)
    return data


def _daemon_handshake(conn: Any, key: bytes, timeout_s: float) -> bool:
    daemon_nonce = secrets.token_bytes(_NONCE_BYTES)
    conn.send_bytes(_HELLO + daemon_nonce)
    proof = _recv(conn, 2 * _NONCE_BYTES, timeout_s)
    if proof is None or len(proof) != 2 * _NONCE_BYTES:
        return False
    client_nonce, client_mac = proof[:_NONCE_BYTES], proof[_NONCE_BYTES:]
    if not hmac.compare_digest(client_mac, _mac(key, b"client", daemon_nonce, client_nonce)):
        log.warning("control pipe: a client with the wrong key was refused")
        conn.send_bytes(_DENIED)
        return False
    conn.send_bytes(_mac(key, b"daemon", daemon_nonce, client_nonce))
    return True


def _client_handshake(conn: Any, key: bytes, address: str, key_file: Path, timeout_s: float) -> None:
    hello = _recv(conn, 256, timeout_s)
    if hello is None:
        raise ControlError(f"EmojiCam did not answer within {timeout_s:g} s")
    if not hello.startswith(_HELLO) or len(hello) != len(_HELLO) + _NONCE_BYTES:
        raise ControlError(f"something other than EmojiCam answers on {address}")
    daemon_nonce = hello[len(_HELLO) :]
    client_nonce = secrets.token_bytes(_NONCE_BYTES)
    conn.send_bytes(client_nonce + _mac(key, b"client", daemon_nonce, client_nonce))
    verdict = _recv(conn, 256, timeout_s)
    if verdict is None:
        raise ControlError(f"EmojiCam did not answer within {timeout_s:g} s")
    if verdict == _DENIED:
        raise ControlError(
            f"EmojiCam refused the key in {key_file}: the daemon on {address} did not write it "
            "(it was restarted meanwhile, or it is another user's); try again, or restart EmojiCam"
        )
    if not hmac.compare_digest(verdict, _mac(key, b"daemon", daemon_nonce, client_nonce)):
        raise ControlError(
            f"the program on {address} does not know the key in {key_file}, so it is not your EmojiCam; "
            "close it and restart EmojiCam"
        )


# ---------------------------------------------------------------- server


class PipeControlServer:
    """Serves ``handler`` on ``address`` (default: this user's named pipe;
    a file path gives a Unix socket, for tests). ``start()`` writes a fresh
    key to ``key_file`` and listens; ``stop()`` stops listening, frees the
    address and removes the key. Call only while holding the
    ``InstanceLock``."""

    def __init__(self, handler: Handler, address: str | None = None, key_file: Path | None = None) -> None:
        self.address = address or pipe_address()
        self.key_file = key_file or key_path()
        self._handler = handler
        self._key = b""
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def start(self) -> None:
        _ensure_private_dir(self.key_file.parent)
        self._key = write_key(self.key_file)  # before listening: a client that connects finds it
        try:
            self._listener = Listener(self.address, backlog=MAX_CONNECTIONS)
        except OSError as exc:
            self._remove_key()
            raise ControlError(
                f"cannot open the control channel {self.address}: {exc}; another program may hold "
                "that name (on Windows, another user's EmojiCam with the same user name)"
            ) from exc
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="emojicam-control", daemon=True)
        self._thread.start()
        log.info("control pipe: %s", self.address)

    def stop(self) -> None:
        listener = self._listener
        if listener is None:
            return
        self._stopping.set()
        # accept() cannot be interrupted on either platform (closing a listening
        # socket does not wake it on Linux; a pipe waits forever), so connect once
        # to wake it; it sees the stop flag and returns.
        with contextlib.suppress(OSError, EOFError):
            Client(self.address).close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.warning("control pipe: the accept thread did not stop")
        listener.close()
        self._listener = None
        self._remove_key()

    def _remove_key(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.key_file.unlink()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while self._take_slot():
            try:
                conn = listener.accept()
            except OSError as exc:
                self._slots.release()
                if self._stopping.is_set():
                    return
                log.warning("control pipe: accept failed: %s", exc)
                self._stopping.wait(0.1)
                continue
            if self._stopping.is_set():  # the wake-up connection from stop()
                conn.close()
                self._slots.release()
                return
            threading.Thread(
                target=self._serve, args=(conn,), name="emojicam-control-conn", daemon=True
            ).start()

    def _take_slot(self) -> bool:
        """Wait for one of the MAX_CONNECTIONS slots (clients beyond them wait
        to be accepted; a silent one frees its slot after REQUEST_TIMEOUT_S);
        False once stopping."""
        while not self._slots.acquire(timeout=0.1):
            if self._stopping.is_set():
                return False
        if self._stopping.is_set():
            self._slots.release()
            return False
        return True

    def _serve(self, conn: Any) -> None:
        try:
            with conn:
                if not _daemon_handshake(conn, self._key, REQUEST_TIMEOUT_S):
                    return
                if not conn.poll(REQUEST_TIMEOUT_S):
                    log.debug("control pipe: a client sent no request")
                    return
                try:
                    raw = conn.recv_bytes(MAX_REQUEST_BYTES)
                except OSError:
                    # documented: a message over maxlength raises OSError and leaves the
                    # connection writable; if the peer is gone instead, the reply fails below
                    reply = {"ok": False, "error": TOO_LONG}
                else:
                    reply = answer(raw, self._handler)
                conn.send_bytes(json.dumps(reply).encode())
                # wait (bounded) for the client to read and hang up before closing our end
                conn.poll(REQUEST_TIMEOUT_S)
        except (OSError, EOFError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            self._slots.release()


# ---------------------------------------------------------------- client


def open_connection(address: str | None = None, key_file: Path | None = None, timeout_s: float = 5.0) -> Any:
    """A connection to the daemon on which both sides have proved they hold
    the key; raises ``NotRunning`` when no daemon listens and
    ``ControlError`` when the key is refused or the channel fails."""
    address = address or pipe_address()
    key_file = key_file or key_path()
    try:
        with connect_errors(address):
            conn = Client(address)
    except OSError as exc:  # anything else the pipe refuses with
        raise ControlError(f"cannot reach EmojiCam on {address}: {exc}") from exc
    try:
        _client_handshake(conn, read_key(key_file), address, key_file, timeout_s)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, EOFError | OSError):
            raise ControlError(f"EmojiCam closed the control channel during the key check: {exc}") from exc
        raise
    return conn


def send_pipe_request(
    request: dict[str, Any],
    address: str | None = None,
    key_file: Path | None = None,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Send one request over the pipe and return the reply; raises like
    ``open_connection``, and ``ControlError`` when the reply does not come."""
    with open_connection(address, key_file, timeout_s) as conn:
        with contextlib.suppress(OSError):  # refused mid-send (too long): its reply says why
            conn.send_bytes(json.dumps(request).encode())
        try:
            buf = _recv(conn, MAX_REPLY_BYTES, timeout_s)
        except EOFError:
            buf = b""
        except OSError as exc:  # over MAX_REPLY_BYTES, or the pipe broke
            raise ControlError(f"no usable reply from EmojiCam: {exc}") from exc
    if buf is None:
        raise ControlError(f"EmojiCam did not answer within {timeout_s:g} s")
    return parse_reply(buf)

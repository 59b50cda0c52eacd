"""The server side of a WebSocket (RFC 6455) that sends every message back: the echo backend's `/ws`.

echo-basic, which the Gateway API conformance suite runs as its backends, answers a WebSocket handshake on
`/ws` and then copies each message back; a gateway's WebSocket support is tested by sending messages through
it and reading them back. Only what an echo needs is here: no extensions, no subprotocols.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

__all__ = ["MAX_MESSAGE", "WebSocketEcho", "accept_key", "read_frame"]

#: Largest message (all its frames together) the echo accepts; a bigger one is closed with 1009.
MAX_MESSAGE = 1024 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a handshake's Sec-WebSocket-Key: it proves the server speaks WebSocket."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


class WebSocketEcho:
    """The server side of a WebSocket (RFC 6455) that sends each message back: frames are read from the
    connection's buffer as they complete, fragmented messages are put together first, pings are answered."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._opcode = 0  # of the message whose fragments are being collected (0: none)
        self._fragments = bytearray()
        self._closed = False

    def receive(self, buf: bytearray) -> None:
        while not self._closed:
            frame = read_frame(buf)
            if frame is None:
                if len(buf) > MAX_MESSAGE + 14:
                    self._close(1009)
                return
            fin, opcode, masked, payload = frame
            if not masked:  # clients must mask every frame (RFC 6455 section 5.1)
                self._close(1002)
            elif opcode in (_TEXT, _BINARY, _CONTINUATION):
                self._data(fin, opcode, payload)
            elif opcode == _PING:
                self._send(_PONG, payload)
            elif opcode == _CLOSE:
                self._close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000)
            elif opcode != _PONG:
                self._close(1002)

    def _data(self, fin: bool, opcode: int, payload: bytes) -> None:
        if (opcode == _CONTINUATION) != bool(self._opcode):
            self._close(1002)  # a continuation without a message, or a new message inside one
            return
        if opcode != _CONTINUATION:
            self._opcode = opcode
        self._fragments += payload
        if len(self._fragments) > MAX_MESSAGE:
            self._close(1009)
        elif fin:
            self._send(self._opcode, bytes(self._fragments))
            self._opcode = 0
            self._fragments.clear()

    def _send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = bytes([0x80 | opcode, size])
        elif size < 1 << 16:
            head = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
        self._transport.write(head + payload)  # server frames are never masked

    def _close(self, code: int) -> None:
        """Send a close frame (answering the client's, or starting the close) and end the connection."""
        self._send(_CLOSE, code.to_bytes(2, "big"))
        self._closed = True
        self._transport.close()


def read_frame(buf: bytearray) -> tuple[bool, int, bool, bytes] | None:
    """Take one complete frame off the front of `buf` (FIN, opcode, masked, unmasked payload); None while
    the frame is still incomplete."""
    if len(buf) < 2:
        return None
    size, offset = buf[1] & 0x7F, 2
    if size == 126:
        size, offset = int.from_bytes(buf[2:4], "big"), 4
    elif size == 127:
        size, offset = int.from_bytes(buf[2:10], "big"), 10
    masked = bool(buf[1] & 0x80)
    start = offset + (4 if masked else 0)
    if len(buf) < start + size:
        return None
    payload = bytes(buf[start : start + size])
    if masked and size:
        mask = (bytes(buf[offset:start]) * (size // 4 + 1))[:size]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
    fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
    del buf[: start + size]
    return fin, opcode, masked, payload

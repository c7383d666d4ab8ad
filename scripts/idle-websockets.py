#!/usr/bin/env python3
"""Both ends of many idle WebSockets held open through one tunnel.

Usage:
  idle-websockets.py origin
      A WebSocket origin on a free loopback port: prints the port, answers every
      upgrade with 101 and holds the connection until the other side closes it.
  idle-websockets.py load HOST:PORT TUNNEL_HOST N
      Opens N WebSockets to HOST:PORT with `Host: TUNNEL_HOST` (the tunnel's public
      name), prints "ready N" once every one has its 101, then holds them all,
      silent, until killed; exits 1 with the reason if one is refused or lost.

One process, one thread, non-blocking sockets each: the memory and CPU measured
are the relay's, not these tools'. Needs as many open files as connections (the
caller raises `ulimit -n`).
"""
import base64
import hashlib
import selectors
import socket
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Upgrades sent before waiting for answers: enough to keep the relay busy,
# few enough that the listen backlogs on the way never overflow.
IN_FLIGHT = 256


def origin():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    heads = {}
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                heads[conn] = b""
                selector.register(conn, selectors.EVENT_READ, None)
                continue
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                selector.unregister(sock)
                heads.pop(sock, None)
                sock.close()
                continue
            if sock not in heads:
                continue  # an upgraded connection: frames are ignored
            heads[sock] += chunk
            if b"\r\n\r\n" not in heads[sock]:
                continue
            head = heads.pop(sock)
            key_value = b""
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key_value = value.strip()
            accept = base64.b64encode(hashlib.sha1(key_value + GUID).digest())
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )


def load(addr, tunnel_host, count):
    host, port = addr.rsplit(":", 1)
    selector = selectors.DefaultSelector()
    pending = {}
    opened = []
    started = 0
    upgraded = 0
    deadline = time.monotonic() + 600
    while upgraded < count:
        while started < count and len(pending) < IN_FLIGHT:
            sock = socket.create_connection((host, int(port)), timeout=30)
            key = base64.b64encode(hashlib.sha1(str(started).encode()).digest()[:16])
            sock.sendall(
                f"GET /ws/{started} HTTP/1.1\r\nHost: {tunnel_host}\r\n"
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n".encode()
            )
            sock.setblocking(False)
            pending[sock] = b""
            selector.register(sock, selectors.EVENT_READ, None)
            started += 1
        if time.monotonic() > deadline:
            sys.exit(f"idle-websockets: only {upgraded} of {count} upgraded in 600 s")
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                sys.exit(f"idle-websockets: connection {upgraded + 1} failed: {e}")
            if not chunk:
                sys.exit(f"idle-websockets: connection closed after {upgraded} upgrades: {pending.get(sock, b'')[:200]!r}")
            pending[sock] += chunk
            if b"\r\n\r\n" not in pending[sock]:
                continue
            head = pending.pop(sock)
            status = head.split(b" ", 2)[1]
            if status != b"101":
                sys.exit(f"idle-websockets: upgrade {upgraded + 1} answered {head[:300]!r}")
            selector.unregister(sock)
            opened.append(sock)
            upgraded += 1
    for sock in opened:
        selector.register(sock, selectors.EVENT_READ, None)
    print(f"ready {count}", flush=True)
    while True:
        for key, _ in selector.select():
            try:
                chunk = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                sys.exit("idle-websockets: the relay closed an idle WebSocket")


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "origin":
        origin()
    elif len(sys.argv) == 5 and sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass

#!/usr/bin/env python3
"""Hold N idle tunnels open on a berth server, as N `berth share` clients would.

Usage: idle-tunnels.py HOST:PORT TOKEN N

For each tunnel it speaks the relay protocol of DESIGN section 6: upgrades
GET /api/v1/tunnels/connect, reads `ready`, answers every `connect` frame by
upgrading GET /api/v1/tunnels/accept/{id} (the data connections the server
keeps open ahead of need) and holds them, and pings every 20 s. It prints
"ready N" once every tunnel is open and each has its pre-opened data
connections, then runs until killed. One process, one thread: the memory
measured is the server's, not this tool's.
"""
import json
import selectors
import socket
import sys
import time

PARKED_PER_TUNNEL = 2
PING_EVERY = 20


def upgrade(addr, path, token=None):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}"
        "Connection: Upgrade\r\nUpgrade: berth-relay/1\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit(f"idle-tunnels: {path}: connection closed during the handshake")
        head += chunk
    status = head.split(b" ", 2)[1]
    if status != b"101":
        rest = sock.recv(65536).decode(errors="replace")
        if token is None and status == b"404":
            # The id expired before we got to it (a loaded machine): the
            # server asks again on its next round of upkeep.
            sock.close()
            return None
        raise SystemExit(f"idle-tunnels: {path} answered {status.decode()}: {rest}")
    return sock


def main():
    addr, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    selector = selectors.DefaultSelector()
    controls = []
    data = []
    buffers = {}
    ready = 0
    announced = False
    last_ping = time.monotonic()
    while True:
        # Open the tunnels one by one, answering frames in between so that
        # no connect id waits long enough to expire.
        if len(controls) < count:
            sock = upgrade(addr, "/api/v1/tunnels/connect?kind=http", token)
            sock.setblocking(False)
            controls.append(sock)
            buffers[sock] = b""
            selector.register(sock, selectors.EVENT_READ)
        timeout = 0 if len(controls) < count else 1
        for key, _ in selector.select(timeout=timeout):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise SystemExit("idle-tunnels: the server closed a control connection")
            buffers[sock] += chunk
            while b"\n" in buffers[sock]:
                line, buffers[sock] = buffers[sock].split(b"\n", 1)
                frame = json.loads(line)
                if "ready" in frame:
                    ready += 1
                elif "connect" in frame:
                    path = "/api/v1/tunnels/accept/" + frame["connect"]["id"]
                    conn = upgrade(addr, path)
                    if conn is not None:
                        data.append(conn)
                elif "ping" in frame:
                    sock.sendall(b'{"pong":{}}\n')
        if time.monotonic() - last_ping >= PING_EVERY:
            last_ping = time.monotonic()
            for sock in controls:
                sock.sendall(b'{"ping":{}}\n')
        if not announced and ready == count and len(data) >= count * PARKED_PER_TUNNEL:
            announced = True
            print(f"ready {count}", flush=True)


if __name__ == "__main__":
    main()

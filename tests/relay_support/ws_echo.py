"""A real WebSocket peer for the relay tests (python `websockets`).

`ws_echo.py server`: an echo server on a free port; prints the port.
`ws_echo.py client PORT HOST`: connects to 127.0.0.1:PORT as ws://HOST/chat,
sends text and binary messages, checks each echo, prints "ok".
"""
import socket
import sys

from websockets.sync.client import connect
from websockets.sync.server import serve


def echo(ws):
    for message in ws:
        ws.send(message)


def server():
    with serve(echo, "127.0.0.1", 0) as srv:
        print(srv.socket.getsockname()[1], flush=True)
        srv.serve_forever()


def client(port, host):
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=20)
    with connect(f"ws://{host}/chat", sock=sock, open_timeout=20, max_size=None) as ws:
        messages = ["hello", "é" * 1000, b"\x00\x01\x02binary", b"x" * (256 * 1024)]
        for message in messages:
            ws.send(message)
            back = ws.recv(timeout=20)
            if back != message:
                print(f"echo differs for a {type(message).__name__} of {len(message)}")
                sys.exit(1)
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2], sys.argv[3])

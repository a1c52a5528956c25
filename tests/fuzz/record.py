"""
Capture real client traffic for the fuzz corpus: a TCP relay in front of the
proxy that writes each connection's client-to-proxy bytes to one file in
the corpus directory (named by its SHA-1, so re-recording is idempotent).

    python -m tests.fuzz.record LISTEN_PORT PROXY_PORT CORPUS_DIR

then run ldapsearch, ldapmodify, ... against 127.0.0.1:LISTEN_PORT.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading


def _pump(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            if record is not None:
                record.extend(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, upstreamPort: int, corpus: str) -> None:
    upstream = socket.create_connection(("127.0.0.1", upstreamPort))
    record = bytearray()
    back = threading.Thread(target=_pump, args=(upstream, client, None), daemon=True)
    back.start()
    _pump(client, upstream, record)
    back.join(10)
    client.close()
    upstream.close()
    if record:
        name = hashlib.sha1(record).hexdigest()
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(record)


def serve(listenPort: int, upstreamPort: int, corpus: str) -> None:
    os.makedirs(corpus, exist_ok=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listenPort))
    listener.listen(16)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, upstreamPort, corpus), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])

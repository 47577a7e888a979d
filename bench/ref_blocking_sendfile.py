"""A blocking sendfile(2) file server, the yardstick of bench/sendfile.sh: one
connection at a time, each HTTP request head answered with the whole file
(Content-Length, keep-alive) by socket.sendfile, which loops os.sendfile on a
blocking socket.

    python3 ref_blocking_sendfile.py PORT FILE
"""

import os
import socket
import sys


def serve(conn, path):
    reader = conn.makefile("rb")
    while True:
        while True:
            line = reader.readline()
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                break
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % size
            )
            conn.sendfile(f)


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    listener = socket.create_server(("127.0.0.1", port))
    print("listening on 127.0.0.1:%d" % port, flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            serve(conn, path)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()

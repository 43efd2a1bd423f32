"""A TLS client that offers ALPN, for tests/mtls.rs: connects to ADDR with SNI NAME,
verifies the server against the CA file, offers the protocols in ALPN (comma-separated),
and sends one GET for AUTHORITY/PATH in whatever protocol the server agreed on (HTTP/2
with python3-h2, or HTTP/1.1). Over HTTP/2 the request says `l5d-orig-proto: HTTP/1.1`,
as a Linkerd proxy's upgraded request does, so an HTTP/1 application can answer it.
Prints `alpn=<proto> status=<code> body=<text>`.

Usage: tls_alpn.py ADDR NAME CA_FILE ALPN AUTHORITY PATH
"""

import socket
import ssl
import sys

import h2.connection
import h2.events


def main():
    addr, name, ca, alpn, authority, path = sys.argv[1:7]
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(alpn.split(","))
    raw = socket.create_connection((host, int(port)), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=name)
    agreed = sock.selected_alpn_protocol()
    if agreed == "h2":
        status, body = get_h2(sock, authority, path)
    else:
        status, body = get_h1(sock, authority, path)
    print(f"alpn={agreed} status={status} body={body}")


def get_h2(sock, authority, path):
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
            ("l5d-orig-proto", "HTTP/1.1"),
        ],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    status, body = None, b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"].decode()
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                return status, body.decode(errors="replace")
            elif isinstance(ev, h2.events.StreamReset):
                return f"reset:{ev.error_code}", ""
        sock.sendall(conn.data_to_send())
    return status, body.decode(errors="replace")


def get_h1(sock, authority, path):
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n".encode()
    )
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    return status, body.decode(errors="replace")


if __name__ == "__main__":
    main()

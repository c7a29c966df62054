#!/usr/bin/env python3
"""A TCP proxy that models the first-byte latency of an S3 link.

    delay_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_MS COUNT_FILE

Every response waits DELAY_MS before its first byte is passed on (the rest of
it flows at once), as real S3 answers tens of milliseconds after a request;
throughput is not capped (the real-S3 issue's link model adds that). A
request is client bytes that arrive on a connection after the server last
spoke. The number of requests seen so far is kept in COUNT_FILE, so a
benchmark can count the S3 requests one operation cost. Prints "ready" once
listening. Loopback only.
"""
import asyncio
import sys


async def main():
    listen, upstream, delay_ms, count_file = sys.argv[1:5]
    host, port = upstream.rsplit(":", 1)
    delay = int(delay_ms) / 1000.0
    count = 0

    def note():
        with open(count_file, "w") as f:
            f.write(f"{count}\n")

    note()

    async def serve(client_r, client_w):
        nonlocal count
        try:
            up_r, up_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        # Set by a request, cleared by the first byte of its answer.
        waiting = asyncio.Event()

        async def to_upstream():
            nonlocal count
            try:
                while data := await client_r.read(65536):
                    if not waiting.is_set():
                        count += 1
                        note()
                        waiting.set()
                    up_w.write(data)
                    await up_w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                up_w.close()

        async def to_client():
            try:
                while data := await up_r.read(65536):
                    if waiting.is_set():
                        await asyncio.sleep(delay)
                        waiting.clear()
                    client_w.write(data)
                    await client_w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                client_w.close()

        await asyncio.gather(to_upstream(), to_client())

    server = await asyncio.start_server(serve, "127.0.0.1", int(listen))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

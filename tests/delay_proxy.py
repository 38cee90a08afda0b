"""A TCP forwarder on loopback that holds back every chunk of data, in both directions, for a fixed
time: machines behind it answer like machines across a network. (This kernel has no netem qdisc.)

It runs in a process of its own, one asyncio loop for every connection, so its CPU, memory and threads
are never counted as the checker's. Each target port gets a listening port of its own; a connection's
upstream is opened one round trip late, as a TCP handshake across the network would be.

    python -m tests.delay_proxy ONE_WAY_MS TARGET_PORT...

prints the listening ports (a JSON list, in the order of the targets) and forwards until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CHUNK = 65536
REPO = Path(__file__).resolve().parent.parent


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy `reader` to `writer`, each chunk `delay` seconds after it arrived; chunks still queue up
    behind it meanwhile, so the delay adds latency, never a limit on throughput."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    delivery = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await delivery
    finally:
        delivery.cancel()
        await asyncio.wait([delivery])  # ended before this connection's task is gone, never left pending


async def forward(client_reader, client_writer, target_port: int, delay: float) -> None:
    try:
        await asyncio.sleep(2 * delay)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    pipes = [asyncio.create_task(pipe(client_reader, upstream_writer, delay)),
             asyncio.create_task(pipe(upstream_reader, client_writer, delay))]
    try:
        await asyncio.gather(*pipes)
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        # A reset in one direction ends the other too, and both have ended when this returns.
        for task in pipes:
            task.cancel()
        await asyncio.wait(pipes)
        for writer in (client_writer, upstream_writer):
            writer.close()


async def serve(delay: float, target_ports: list[int]) -> None:
    # asyncio's stream protocol lets go of a connection's task once the connection is lost; held here
    # until it ends, a task is never destroyed while still forwarding (or closing) its connection.
    running: set[asyncio.Task] = set()

    def accept(reader, writer, port: int) -> None:
        task = asyncio.create_task(forward(reader, writer, port, delay))
        running.add(task)
        task.add_done_callback(running.discard)

    servers = [await asyncio.start_server(lambda r, w, port=port: accept(r, w, port), "127.0.0.1", 0, backlog=512)
               for port in target_ports]
    print(json.dumps([server.sockets[0].getsockname()[1] for server in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    os._exit(0)  # at once: cancelling the open connections' tasks one by one only makes asyncio log them


@dataclass
class DelayProxy:
    """The forwarder's process; `ports[i]` reaches target port i with the delay."""

    process: subprocess.Popen
    ports: list[int]

    @classmethod
    def start(cls, one_way_ms: float, target_ports: list[int]) -> DelayProxy:
        process = subprocess.Popen([sys.executable, "-m", "tests.delay_proxy", str(one_way_ms),
                                    *map(str, target_ports)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   cwd=str(REPO))
        return cls(process, json.loads(process.stdout.readline()))

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    asyncio.run(serve(float(sys.argv[1]) / 1000, [int(port) for port in sys.argv[2:]]))

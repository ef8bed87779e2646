#!/usr/bin/env python3
"""Webhook receiver for the latency benchmark (Python 3 standard library only).

Answers every POST with 200 at once and records, in memory, the arrival time (ms since the epoch,
taken when the request's last byte is read) and the event's "timestamp" from the JSON body
(switchboard's capture time, ms precision). It is an asyncio server with a minimal HTTP/1.1 parser
so that it is not the bottleneck at a few thousand requests per second on one core.

POST /v1/chat/completions is a model for the enrichment benchmark: it answers a chat.completion
(content {"score": 1}, usage 10 + 2 tokens) after --model-latency-ms, without blocking the others.

Control requests (any method):
  GET /_control/events   -> JSON [[arrival_ms, "2026-...Z", handling_us], ...]
  GET /_control/stats    -> JSON {"chat_calls": n, "max_in_flight": m} (model calls since reset)
  POST /_control/reset   -> forget what was recorded
Usage: receiver.py --port-file FILE [--model-latency-ms MS]
       (binds 127.0.0.1 on a free port and writes it to FILE)
"""

import argparse
import asyncio
import json
import os
import re
import time

TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*"([^"]+)"')
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

events = []  # (arrival_ms, timestamp text, handling µs)
model = {"latency_s": 0.5, "calls": 0, "in_flight": 0, "max_in_flight": 0}
CHAT = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "model": "bench-model",
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "{\"score\": 1}"}}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}).encode()


def reply(body, status=b"200 OK"):
    return b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: " + \
        str(len(body)).encode() + b"\r\n\r\n" + body


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        self.continued = False

    def data_received(self, data):
        arrival = time.time()
        self.buffer += data
        # Several requests may arrive in one read (pipelining) or one request over several reads.
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length, expect = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"expect" and value.strip().lower() == b"100-continue":
                    expect = True
            end = head_end + 4 + length
            if len(self.buffer) < end:
                if expect and not self.continued:
                    # A client waiting for "100 Continue" would otherwise stall before the body.
                    self.continued = True
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            self.continued = False
            body = self.buffer[head_end + 4:end]
            self.buffer = self.buffer[end:]
            request_line = head.split(b" ", 2)
            if len(request_line) > 1 and request_line[1].startswith(b"/v1/chat/completions"):
                self.answer_later()
            else:
                self.transport.write(self.handle(request_line, body, arrival))

    def answer_later(self):
        model["calls"] += 1
        model["in_flight"] += 1
        model["max_in_flight"] = max(model["max_in_flight"], model["in_flight"])

        def answer():
            model["in_flight"] -= 1
            if not self.transport.is_closing():
                self.transport.write(reply(CHAT))
        asyncio.get_running_loop().call_later(model["latency_s"], answer)

    def handle(self, request_line, body, arrival):
        path = request_line[1] if len(request_line) > 1 else b"/"
        if path.startswith(b"/_control/events"):
            return reply(json.dumps(events).encode())
        if path.startswith(b"/_control/stats"):
            return reply(json.dumps({"chat_calls": model["calls"], "max_in_flight": model["max_in_flight"]}).encode())
        if path.startswith(b"/_control/reset"):
            events.clear()
            model["calls"] = model["max_in_flight"] = 0
            return reply(b"{}")
        match = TIMESTAMP.search(body)
        events.append((arrival * 1000.0, match.group(1).decode() if match else None,
                       round((time.time() - arrival) * 1e6, 1)))
        return OK


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--model-latency-ms", type=float, default=500)
    args = parser.parse_args()
    model["latency_s"] = args.model_latency_ms / 1000.0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(args.port_file + ".tmp", args.port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

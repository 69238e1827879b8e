"""A local OpenAI-compatible chat endpoint: answers from a script (a list, or a function of the
request), and records each request and its Authorization header. The LLM tests never reach a model."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeModel(ThreadingHTTPServer):
    def __init__(self, answers: list[str] | Callable[[dict[str, Any]], str]) -> None:
        self.answers, self.prompts, self.auth = answers, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.prompts.append(body)
                server.auth.append(self.headers.get("Authorization"))
                content = server.answer(body)
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)

    def answer(self, body: dict[str, Any]) -> str:
        if callable(self.answers):
            return self.answers(body)
        return self.answers[min(len(self.prompts), len(self.answers)) - 1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FakeModel:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

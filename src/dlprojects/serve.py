"""A logged model over HTTP, on MLflow's own scoring server (`/invocations` in every format
`mlflow models serve` takes, `/ping`, `/health`, `/version`), with guards on its front door:

    python -m dlprojects.serve models:/<name>@champion --port 5002
    make serve MODEL=models:/<name>@champion PORT=5002

- a request body over `--max-mb` (default 16 MB: 4,096 images as JSON take about 9 MB) is refused
  with 413 before it is read whole;
- an error answer is one short line (at most 300 characters) that quotes no more than 40
  characters of the request: MLflow's own messages quote the whole input (a 5 MB body was
  answered with 37 MB);
- an empty batch is named as such (MLflow says "input of type list was found").

It binds 127.0.0.1 unless `--host` says otherwise and runs from the venv without activating it
(no `uvicorn` on PATH needed). It checks the port, the tracking store and the model's signature,
then becomes a fresh Python process (`os.execv`) that loads the model as `mlflow models serve`
does: with the code logged beside it first on the path, not this checkout's, so a model serves
as it was trained whatever the checkout holds. That process reads this file by its path and
imports nothing of `dlprojects` before the model does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

MAX_MESSAGE = 300  # characters of an error answer
MAX_QUOTED = 40  # characters of a quoted value kept in an error answer: longer ones go
Scope, Message = dict[str, Any], dict[str, Any]
Receive, Send = Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]


def short_message(raw: bytes) -> str:
    """One line of at most MAX_MESSAGE characters from an error answer of MLflow's scoring server
    (JSON with a message, or plain text), its innermost reason and no quoted input beyond
    MAX_QUOTED characters (a longer one is replaced by its length)."""
    head = raw[:4 * MAX_MESSAGE] if not raw.lstrip().startswith(b"{") else raw
    try:
        message = str(json.loads(head).get("message", ""))
    except (ValueError, AttributeError):
        message = head.decode("utf-8", "replace")
    # "Failed to predict data '<input>'. Error: Failed to enforce schema ... Error: <reason>"
    message = message.rsplit("Error: ", 1)[-1][:2**16]  # a quote cut short here ends at the end
    message = re.sub(r"([`'\"])([^`'\"]{%d,})(\1|$)" % (MAX_QUOTED + 1),
                     lambda quoted: (f"<{len(quoted[2]):,} characters of input>" if quoted[3]
                                     else "<the input>"),
                     message)
    message = " ".join(message.split()) or "the model could not answer this request"
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."


def empty_batch(body: bytes) -> bool:
    """Whether a JSON request holds an empty batch in any of MLflow's input formats."""
    try:
        request = json.loads(body)
    except ValueError:
        return False  # MLflow answers it (400, not JSON)
    if not isinstance(request, dict):
        return False
    split = request.get("dataframe_split")
    return (any(request.get(key) == [] for key in ("inputs", "instances", "dataframe_records"))
            or (isinstance(split, dict) and split.get("data") == []))


class Guarded:
    """An ASGI wrapper of MLflow's scoring app: the body limit, short errors and the empty-batch
    message on /invocations; other paths pass through untouched."""

    def __init__(self, app, max_bytes: int, noun: str):
        self.app, self.max_bytes, self.noun = app, max_bytes, noun

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations":
            return await self.app(scope, receive, send)
        too_big = (f"the request body is over {self.max_bytes // 2**20} MB; send the batch in "
                   f"parts")
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await answer(send, 400, "BAD_REQUEST", "the Content-Length header is not a "
                                                          "number")
        if int(length) > self.max_bytes:
            return await answer(send, 413, "RESOURCE_EXHAUSTED", too_big)
        body = bytearray()
        while True:  # a chunked body has no length: counted as it comes
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await answer(send, 413, "RESOURCE_EXHAUSTED", too_big)
            if not message.get("more_body"):
                break
        if empty_batch(body):
            return await answer(send, 400, "INVALID_PARAMETER_VALUE",
                                f"the batch is empty: send at least one {self.noun}")
        await self._answer_shortly(scope, bytes(body), send)

    async def _answer_shortly(self, scope: Scope, body: bytes, send: Send) -> None:
        """MLflow's answer to `body`, its error answers made short."""
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: Message = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, replay, keep)
        status = start.get("status", 500)
        if status < 400:
            await send(start)
            return await send({"type": "http.response.body", "body": b"".join(chunks)})
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        try:
            code = str(json.loads(b"".join(chunks)).get("error_code", code))[:40]
        except (ValueError, AttributeError):
            pass
        await answer(send, status, code, short_message(b"".join(chunks)))


async def answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve(model_uri: str, host: str, port: str, max_bytes: str, noun: str) -> None:
    """In the fresh process: load the model (its logged code first on the path), then serve it
    behind the guard until stopped."""
    import mlflow.pyfunc
    import uvicorn
    from mlflow.pyfunc import scoring_server

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as error:  # noqa: BLE001 - the model's own code failed: one line, not a trace
        message = " ".join(str(error).split())[:MAX_MESSAGE] or type(error).__name__
        print(f"error: {model_uri} does not load ({message})", file=sys.stderr)
        raise SystemExit(2) from None
    app = Guarded(scoring_server.init(model), int(max_bytes), noun)
    print(f"serving {model_uri} on http://{host}:{port}/invocations", flush=True)
    uvicorn.run(app, host=host, port=int(port), workers=1, log_level="warning")


def check_port(host: str, port: int) -> None:
    import socket

    from dlprojects.core.errors import UserError

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"{host}:{port}: cannot listen there ({error.strerror}); choose "
                            f"another --port or --host") from None


BOOT = ("import importlib.util, sys; "
        "spec = importlib.util.spec_from_file_location('dlprojects_front_door', sys.argv[1]); "
        "door = importlib.util.module_from_spec(spec); spec.loader.exec_module(door); "
        "door.serve(*sys.argv[2:])")


def main() -> None:
    from dlprojects.core.errors import UserError
    from dlprojects.core.tracking import tracking_uri
    from dlprojects.predict import declared_input

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="models:/<name>@champion, models:/<name>/<version> or "
                                      "runs:/<id>/model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to bind (default: %(default)s; 0.0.0.0 shares it)")
    parser.add_argument("--port", type=int, default=5001, help="default: %(default)s")
    parser.add_argument("--max-mb", type=int, default=16,
                        help="the largest request body, in MB (default: %(default)s)")
    args = parser.parse_args()
    if not 0 < args.port < 65536 or args.max_mb < 1:
        raise UserError("--port must be 1-65535 and --max-mb at least 1")
    if ":/" not in args.model:
        raise UserError(f"{args.model}: not a logged model; give models:/<name>@champion (the "
                        f"evaluate stages register each model) or runs:/<id>/model")
    check_port(args.host, args.port)  # all before the model loads (seconds to minutes)
    kind, _ = declared_input(args.model)  # the store answers and the model is there
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-c", BOOT, os.path.abspath(__file__), args.model,
                              args.host, str(args.port), str(args.max_mb * 2**20),
                              "image" if kind == "images" else "review"])


if __name__ == "__main__":
    from dlprojects.core.errors import run_main

    run_main(main)

"""A real MCP client (the official Python SDK, PyPI `mcp`) for crates/pedm/tests/mcp.rs.

Usage: mcp_client.py COMMAND [ARG...]

Starts COMMAND ARG... (`pedm mcp`) through the SDK's stdio client, with the PEDM_*
variables of this process's environment passed on, and initializes the session. Then it
reads one JSON command per line on stdin and answers each with one JSON line on stdout,
tagged with the command's "id"; commands run concurrently, so a waiting tool call does not
hold up the others:

  {"id": "t", "op": "list_tools"}
      -> {"id": "t", "tools": [{"name", "description", "input_schema", "annotations"}]}
  {"id": "c", "op": "call", "tool": NAME, "args": {...}}
      -> {"id": "c", "is_error": bool, "text": "...", "structured": {...} | null}
      -> {"id": "c", "protocol_error": "..."}   (a JSON-RPC error instead of a result)

The first line it prints is {"id": "init", "server": {...}, "instructions": "..."} once the
session is initialized, or {"id": "init", "error": "..."} (exit status 1) when it is not.
End of input closes the session and the server.
"""

import json
import os
import sys

import anyio
import anyio.to_thread
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

out_lock = anyio.Lock()


async def emit(obj):
    async with out_lock:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model is not None else None


async def handle(session, cmd):
    cid = cmd.get("id")
    try:
        if cmd.get("op") == "list_tools":
            r = await session.list_tools()
            await emit(
                {
                    "id": cid,
                    "tools": [
                        {
                            "name": t.name,
                            "description": t.description,
                            "input_schema": t.input_schema,
                            "annotations": dump(t.annotations),
                        }
                        for t in r.tools
                    ],
                }
            )
        elif cmd.get("op") == "call":
            r = await session.call_tool(cmd["tool"], cmd.get("args") or {})
            text = "".join(getattr(c, "text", "") for c in r.content)
            await emit({"id": cid, "is_error": bool(r.is_error), "text": text, "structured": r.structured_content})
        else:
            await emit({"id": cid, "protocol_error": f"unknown op {cmd.get('op')!r}"})
    except MCPError as e:
        await emit({"id": cid, "protocol_error": str(e)})


async def main(argv):
    if len(argv) < 2:
        print("usage: mcp_client.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k.startswith("PEDM_")}
    params = StdioServerParameters(command=argv[1], args=argv[2:], env=env)
    try:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                try:
                    init = await session.initialize()
                except Exception as e:  # the server did not start or answer
                    await emit({"id": "init", "error": f"{type(e).__name__}: {e}"})
                    return 1
                await emit(
                    {
                        "id": "init",
                        "server": dump(init.server_info),
                        "protocol_version": init.protocol_version,
                        "instructions": init.instructions,
                    }
                )
                async with anyio.create_task_group() as tg:
                    while True:
                        line = await anyio.to_thread.run_sync(sys.stdin.readline)
                        if not line:
                            break
                        if line.strip():
                            tg.start_soon(handle, session, json.loads(line))
        return 0
    except Exception as e:
        await emit({"id": "init", "error": f"{type(e).__name__}: {e}"})
        return 1


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv))

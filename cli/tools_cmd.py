"""/tools: the MCP tools the model may call (config/mcp.json), and whether each is on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .commands import App


def list_tools(app: App, arg: str) -> None:
    """/tools lists them; /tools use NAME makes the next reply call NAME (in direct mode)."""
    tools = app.client.tools()
    words = arg.split()
    if len(words) == 2 and words[0] == "use":
        if not hasattr(app.client, "force_tool"):
            app.out.hint("/tools use works in direct mode; a server's API is asked with tool_choice.")
        elif words[1] not in [t["name"] for t in tools if t.get("enabled")]:
            app.out.hint(f"There is no enabled tool named {words[1]!r}. Type /tools to list them.")
        else:
            app.client.force_tool = words[1]
            app.out.success(f"The next reply calls {words[1]}.")
        return
    if not tools:
        app.out.info("No tools: put your MCP servers in config/mcp.json (the mcpServers format) and restart.")
        return
    rows = []
    for t in tools:
        about = str(t.get("description") or "").split("\n")[0]
        rows.append((t["name"], t.get("server", ""), "on" if t.get("enabled") else "off", about[:70]))
    app.out.table("Tools", ("name", "server", "", "description"), rows)
    app.out.hint("The model may call the ones that are on; each call asks you y/N (tools.approval).")
    app.out.hint("/tools use NAME makes the next reply call that tool.")

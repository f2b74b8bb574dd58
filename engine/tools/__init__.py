"""Tools: MCP servers the model can call, and how a model's tool calls are written, parsed and constrained.

Small modules, one job each:

- `mcp_config`: reads `config/mcp.json` (Claude Desktop / LM Studio / Jan format) into server configs,
  with an error per server that names the field;
- `hub`: `ToolHub`, the synchronous face of the MCP client (start, list, call, restart, state);
- `connection`: one MCP server, held open by the official SDK on the hub's asyncio loop;
- `results`: `ToolResult` and the capping of long results;
- `formats` and `parse`: the tool-call formats models emit, and a streaming parser for them;
- `prompt`: the tools described in a system message, for chat templates that cannot render them;
- `approval`: ask / auto / allow-list, and the refusal a denied call turns into;
- `attach`: the one hub of a Runtime, made on first use.

The JSON-schema -> GBNF grammar lives in `engine/backends/tool_grammar.py`: only the model worker may
import llama_cpp, and the grammar is built where it is used.

This package imports nothing heavy: the MCP SDK is loaded by `hub` and `connection` only.
"""

"""HttpClient: a running server (python -m webui) over its REST API and SSE stream (/api/chat/stream)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from engine import EngineError, InvalidInput, ModelUnavailable, SamplingParams, Session

from .clients import ChatState, Done, Event, Note, Text, Thought, ToolDone, ToolUse, greeting_of

JSON_BODY = {"Content-Type": "application/json"}


class RemoteError(EngineError):
    """An error the server reported, with its type and message."""

    def __init__(self, kind: str, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


class HttpClient:
    kind = "http"

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.where = (url if "://" in url else f"http://{url}").rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.where, headers=headers, timeout=timeout)
        self.state = ChatState()
        self._greeting: str | None = None  # sent as the first assistant turn of a new chat
        self._epoch = 0  # bumped by new_chat/open, so a late stream cannot touch a newer chat

    # --- plumbing -----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            raise _error_from(resp)
        return resp

    def _unreachable(self, exc: Exception) -> ModelUnavailable:
        why = str(exc) or type(exc).__name__
        return ModelUnavailable(f"Cannot reach the server at {self.where} ({why}). Is it running?")

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._call(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise RemoteError("bad_reply", f"The server at {self.where} did not answer in JSON.") from None

    # --- turns --------------------------------------------------------------------------------------

    def send(self, text: str, cancel: threading.Event) -> Iterator[Event]:
        st = self.state
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": text}],
            "params": st.params,
            **st.options,
        }
        before: set[str] | None = None
        if st.session_id is None:
            body["session_id"] = "new"
            if st.preset:
                body["preset"] = st.preset
            head = [{"role": "system", "content": st.system_prompt}] if st.system_prompt is not None else []
            if self._greeting:
                head.append({"role": "assistant", "content": self._greeting})
            body["messages"] = head + body["messages"]
            before = {s["id"] for s in self.sessions()}
        else:
            body["session_id"] = st.session_id
        resp = self._open(body)  # the server checks the request before it streams: errors come here
        return self._turn(resp, text, before, cancel)

    def _open(self, body: dict[str, Any], path: str = "/api/chat/stream") -> httpx.Response:
        timeout = httpx.Timeout(self.http.timeout.connect, read=None, write=30.0, pool=30.0)
        request = self.http.build_request("POST", path, json=body, timeout=timeout)
        try:
            resp = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            try:
                resp.read()
            finally:
                resp.close()
            raise _error_from(resp)
        return resp

    def _turn(
        self, resp: httpx.Response, text: str, before: set[str] | None, cancel: threading.Event
    ) -> Iterator[Event]:
        st, epoch = self.state, self._epoch
        finished = False
        try:
            for event in self._stream(resp, cancel):
                if isinstance(event, Done):
                    finished = True
                    if epoch == self._epoch:
                        self._greeting = None
                        st.session_id = event.session_id or st.session_id
                        st.last_metrics = dict(event.metrics)
                yield event
            if not finished:
                if not cancel.is_set():
                    raise RemoteError("stream_error", "The server ended the stream before the reply.")
                yield Done("cancelled")  # the stream was closed (Ctrl+C): the server keeps what was generated
        finally:
            if before is not None and st.session_id is None and epoch == self._epoch:
                self._find_new_session(before, text)

    def _stream(self, resp: httpx.Response, cancel: threading.Event) -> Iterator[Event]:
        """SSE lines -> events. Closing the response is how a Ctrl+C reaches the server."""
        try:
            event_name = ""
            for line in resp.iter_lines():
                if cancel.is_set():
                    return
                if not line:
                    event_name = ""
                elif line.startswith("event:"):
                    event_name = line[6:].strip()
                elif line.startswith("data:"):
                    yield from _sse_events(event_name, line[5:].strip())
        except httpx.HTTPError as exc:
            if cancel.is_set():
                return
            raise self._unreachable(exc) from None
        finally:
            resp.close()

    def _find_new_session(self, before: set[str], text: str) -> None:
        """A new chat stopped before its `done` event: find the session the server created for it."""
        try:
            new = [s for s in self.sessions() if s["id"] not in before]
            for summary in new[:5]:
                doc = self._json("GET", f"/api/sessions/{summary['id']}")
                if any(m.get("role") == "user" and m.get("content") == text for m in doc.get("messages", [])):
                    self.state.adopt(Session.from_doc(doc, summary["id"]))
                    self._greeting = None
                    return
        except EngineError:
            pass

    def regenerate(self, cancel: threading.Event, index: int | None = None) -> Iterator[Event]:
        sid = self.state.session_id
        if sid is None:
            raise InvalidInput("There is no reply to regenerate yet.")
        body: dict[str, Any] = {"params": self.state.params}
        if index is not None:
            body["index"] = index
        resp = self._open(body, f"/api/sessions/{sid}/regenerate")
        return self._turn(resp, "", None, cancel)

    def edit(self, index: int, text: str, cancel: threading.Event) -> Iterator[Event] | None:
        session = self.current()
        if session is None:
            raise InvalidInput("There is nothing to edit yet.")
        body = {"index": index, "content": text}
        if 0 <= index < len(session.messages) and session.messages[index].role == "user":
            resp = self._open({**body, "params": self.state.params}, f"/api/sessions/{session.id}/edit")
            return self._turn(resp, "", None, cancel)
        self._json("POST", f"/api/sessions/{session.id}/edit", json=body)
        return None

    def select(self, index: int, version: int) -> Session:
        sid = self.state.session_id
        if sid is None:
            raise InvalidInput("There is nothing to choose from yet.")
        doc = self._json("POST", f"/api/sessions/{sid}/select", json={"index": index, "version": version})
        return Session.from_doc(doc, sid)

    def current(self) -> Session | None:
        sid = self.state.session_id
        return None if sid is None else Session.from_doc(self._json("GET", f"/api/sessions/{sid}"), sid)

    def impersonate(self, cancel: threading.Event) -> Iterator[Event]:
        st = self.state
        body: dict[str, Any] = {"messages": [], "params": st.params, **st.options}
        if st.session_id is not None:
            body["session_id"] = st.session_id
        else:
            if st.preset:
                body["preset"] = st.preset
            if st.system_prompt is not None:
                body["messages"] = [{"role": "system", "content": st.system_prompt}]
            if self._greeting:
                body["messages"].append({"role": "assistant", "content": self._greeting})
        resp = self._open(body, "/api/chat/impersonate")
        return self._stream(resp, cancel)

    def personas(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/personas"))

    def lorebooks(self) -> list[str]:
        return [str(b["name"]) for b in self._json("GET", "/api/lorebooks")]

    def tools(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/tools"))

    # --- chats --------------------------------------------------------------------------------------

    def new_chat(self, preset: str | None, system_prompt: str | None, params: dict[str, Any]) -> str | None:
        doc = self._json("GET", f"/api/presets/{preset}") if preset else None
        self._epoch += 1
        options = self.state.options
        self.state = ChatState(
            preset=preset, system_prompt=system_prompt, params=dict(params), options=options
        )
        self._greeting = greeting_of(doc)
        return self._greeting

    def open(self, session_id: str) -> Session:
        session = Session.from_doc(self._json("GET", f"/api/sessions/{session_id}"), session_id)
        self._epoch += 1
        self.state = ChatState()
        self.state.adopt(session)
        self._greeting = None
        return session

    def sessions(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/sessions"))

    def rename(self, title: str) -> str:
        """PATCH when the server has it; else import a copy under the new title (a new id), delete the old."""
        sid = self.state.session_id
        if sid is None:
            raise InvalidInput("Nothing to save yet: send a message first, then /save NAME.")
        title = " ".join(title.split())[:200]
        try:
            self._call("PATCH", f"/api/sessions/{sid}", json={"title": title})
            return sid
        except RemoteError as exc:
            if exc.status not in (404, 405):
                raise
        doc = self._json("GET", f"/api/sessions/{sid}")  # NotFound here when the chat itself is gone
        doc["title"] = title
        body = json.dumps(doc).encode()
        new_id = self._json("POST", "/api/sessions/import", content=body, headers=JSON_BODY)["id"]
        self._call("DELETE", f"/api/sessions/{sid}")
        self.state.session_id = new_id
        return str(new_id)

    def presets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/presets"))

    def effective_params(self) -> tuple[dict[str, Any], bool]:
        """The server's config defaults are not published: show ours under the preset's and this chat's."""
        sampling: dict[str, Any] = {}
        if self.state.preset:
            try:
                sampling = self._json("GET", f"/api/presets/{self.state.preset}").get("sampling") or {}
            except EngineError:
                sampling = {}
        return SamplingParams.parse({**sampling, **self.state.params}).model_dump(), False

    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/health"))

    def close(self) -> None:
        self.http.close()


def _sse_events(name: str, data: str) -> list[Event]:
    try:
        doc = json.loads(data)
    except ValueError:
        return []
    if name == "error" or "error" in doc:
        err = doc.get("error") or {}
        message = str(err.get("message", "The server reported an error."))
        raise RemoteError(str(err.get("type", "error")), message)
    if "delta" in doc:
        return [Text(str(doc["delta"]))]
    if "reasoning" in doc:
        return [Thought(str(doc["reasoning"]))]
    if isinstance(doc.get("tool_call"), dict):
        call = doc["tool_call"]
        return [ToolUse(str(call.get("name")), dict(call.get("arguments") or {}))]
    if isinstance(doc.get("tool_result"), dict):
        res = doc["tool_result"]
        return [ToolDone(str(res.get("content", "")), bool(res.get("is_error")))]
    if doc.get("done"):
        sid = doc.get("session_id")
        notes: list[Event] = [Note(str(w)) for w in doc.get("warnings") or []]
        return [
            *notes,
            Done(str(doc.get("finish_reason", "stop")), dict(doc.get("metrics") or {}), sid and str(sid)),
        ]
    return []


def _error_from(resp: httpx.Response) -> RemoteError:
    try:
        err = resp.json().get("error") or {}
        kind, message = str(err.get("type", "error")), str(err.get("message"))
    except (ValueError, AttributeError):
        kind, message = "http_error", ""
    if not message or message == "None":
        message = f"The server answered {resp.status_code} {resp.reason_phrase} to {resp.request.url.path}."
    if resp.status_code == 401:
        message += " Pass the server's key with --api-key."
    return RemoteError(kind, message, resp.status_code)

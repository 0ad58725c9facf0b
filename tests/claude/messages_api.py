#!/usr/bin/env python3
"""A stand-in for Anthropic's Messages API, scripted by a test (tests/it/claude.rs).

The real Claude Code CLI runs inside an agent against it. It serves only the shapes that
CLI uses:

- POST /v1/messages (any query string, e.g. ?beta=true) with a JSON body: model, system,
  messages, tools, stream. With "stream": true the answer is server-sent events in the
  Messages API's streaming shape: message_start, content_block_start /
  content_block_delta (text_delta or input_json_delta) / content_block_stop per block,
  message_delta (stop_reason, usage), message_stop. Without it, one JSON message:
  {id, type: "message", role: "assistant", model, content: [...], stop_reason, usage}.
- Content blocks it answers with: {"type": "text", "text"} and
  {"type": "tool_use", "id", "name", "input"}; stop_reason "end_turn" or "tool_use".
- Anything else (GET, other paths): 404.

The script (--script FILE) is a JSON list of steps, each {"match": TEXT, "where": TEXT,
"reply": [blocks]}. For each request the first step not yet used whose "match" occurs in
the JSON text of the request's last user-role message (a prompt, or tool results) and whose
"where" (optional) occurs anywhere in the request is used (and used up); with none, the
reply is the text "ok". A tool_use block of step N gets the id "toolu_sN_<index>", so a
later step can match on its result.
Every request is appended to --log FILE as one JSON line (path, headers, body, step).
"""

import argparse
import http.server
import json
import threading

LOCK = threading.Lock()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    steps = json.load(open(args.script))
    used = [False] * len(steps)
    log = open(args.log, "a")
    counter = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def do_POST(self):
            n = int(self.headers.get("content-length", 0))
            try:
                body = json.loads(self.rfile.read(n) or b"{}")
            except ValueError:
                body = {}
            if not self.path.startswith("/v1/messages") or "messages" not in body:
                self.send_response(404)
                self.end_headers()
                return
            # The CLI may put a system-role message (its environment) after the user's.
            users = [m for m in body["messages"] if m.get("role") == "user"]
            last = json.dumps(users[-1] if users else {})
            with LOCK:
                counter[0] += 1
                step = None
                whole = json.dumps(body)
                for i, s in enumerate(steps):
                    if not used[i] and s["match"] in last and s.get("where", "") in whole:
                        used[i] = True
                        step = i
                        break
                log.write(json.dumps({"path": self.path, "headers": dict(self.headers),
                                      "body": body, "step": step}) + "\n")
                log.flush()
                reply = steps[step]["reply"] if step is not None else [{"type": "text", "text": "ok"}]
                msg_id = "msg_%d" % counter[0]
            content = []
            for j, b in enumerate(reply):
                if b["type"] == "tool_use":
                    # Named by the step, so a later step can match on its result.
                    content.append({"type": "tool_use", "id": "toolu_s%s_%d" % (step, j),
                                    "name": b["name"], "input": b.get("input", {})})
                else:
                    content.append({"type": "text", "text": b["text"]})
            stop = "tool_use" if any(c["type"] == "tool_use" for c in content) else "end_turn"
            usage = {"input_tokens": 100, "output_tokens": 20}
            message = {"id": msg_id, "type": "message", "role": "assistant",
                       "model": body.get("model", "stand-in"), "content": content,
                       "stop_reason": stop, "stop_sequence": None, "usage": usage}
            if not body.get("stream"):
                data = json.dumps(message).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.end_headers()

            def event(kind, data):
                data["type"] = kind
                self.wfile.write(("event: %s\ndata: %s\n\n" % (kind, json.dumps(data))).encode())

            start = dict(message, content=[], stop_reason=None,
                         usage={"input_tokens": 100, "output_tokens": 1})
            event("message_start", {"message": start})
            for j, c in enumerate(content):
                if c["type"] == "tool_use":
                    event("content_block_start", {"index": j, "content_block":
                          {"type": "tool_use", "id": c["id"], "name": c["name"], "input": {}}})
                    event("content_block_delta", {"index": j, "delta":
                          {"type": "input_json_delta", "partial_json": json.dumps(c["input"])}})
                else:
                    event("content_block_start", {"index": j, "content_block": {"type": "text", "text": ""}})
                    event("content_block_delta", {"index": j, "delta": {"type": "text_delta", "text": c["text"]}})
                event("content_block_stop", {"index": j})
            event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                    "usage": {"output_tokens": 20}})
            event("message_stop", {})

    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()

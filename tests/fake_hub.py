"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for testing `icm export
--push-to-hub` up to the client: huggingface_hub and datasets talk to it as to the Hub (the
command runs with HF_ENDPOINT pointing here), and it records what they send.

It answers only what a dataset push asks for: create a repository, repository info, the
preupload question (Parquet shards go by LFS, as on the Hub, other files inside the commit), the
LFS batch and upload, commits, tree listings, paths-info and file downloads. The client is run
with HF_HUB_DISABLE_XET=1, so that it uploads by the LFS protocol rather than to Xet storage,
which needs a content-addressed store this stand-in does not have. Repositories live in memory;
every request is kept in `requests` (method, path, Authorization header).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlparse

REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    commits: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Seen:
    method: str
    path: str
    authorization: Optional[str]


class FakeHub:
    def __init__(self, fail_with: Optional[int] = None):
        self.repos: dict[str, Repo] = {}
        self.requests: list[Seen] = []
        self.created: list[dict[str, Any]] = []  # the bodies of repository creations
        self.blobs: dict[str, bytes] = {}  # LFS uploads by sha256
        self.fail_with = fail_with  # answer every request with this status (a refused token, say)
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hub.handle(self, "GET")

            def do_HEAD(self):
                hub.handle(self, "HEAD")

            def do_POST(self):
                hub.handle(self, "POST")

            def do_PUT(self):
                hub.handle(self, "PUT")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- dispatch

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method in ("POST", "PUT") else b""
        with self.lock:
            self.requests.append(Seen(method, path, h.headers.get("Authorization")))
            if self.fail_with is not None:
                return self.reply(h, self.fail_with, {"error": "Invalid credentials in Authorization header"})
            routes = [
                ("POST", r"/api/repos/create", self.create),
                ("POST", r"/api/validate-yaml", lambda h, *_: self.reply(h, 200, {"errors": [], "warnings": []})),
                ("GET", rf"/api/datasets/{REPO}(/revision/(?P<rev>[^/]+))?", self.info),
                ("POST", rf"/api/datasets/{REPO}/preupload/(?P<rev>[^/]+)", self.preupload),
                ("POST", rf"/api/datasets/{REPO}/commit/(?P<rev>[^/]+)", self.commit),
                ("GET", rf"/api/datasets/{REPO}/tree/(?P<rev>[^/]+)(/(?P<sub>.*))?", self.tree),
                ("POST", rf"/api/datasets/{REPO}/paths-info/(?P<rev>[^/]+)", self.paths_info),
                ("GET", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
                ("HEAD", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
                ("POST", rf"/datasets/{REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
                ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]+)", self.lfs_upload),
            ]
            for verb, pattern, fn in routes:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    return fn(h, match.groupdict(), body, parse_qs(url.query), method)
            self.reply(h, 404, {"error": f"fake hub: no route for {method} {path}"})

    def reply(self, h: BaseHTTPRequestHandler, status: int, payload: Any, headers: Optional[dict] = None,
              raw: Optional[bytes] = None, method: str = "GET") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    def missing(self, h, what: str, method: str = "GET") -> None:
        code = {"repo": "RepoNotFound", "file": "EntryNotFound"}[what]
        self.reply(h, 404, {"error": f"{what} not found"}, {"X-Error-Code": code}, method=method)

    # ---- the Hub's answers

    def create(self, h, _, body, __, ___) -> None:
        req = json.loads(body)
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        private = bool(req.get("private")) or req.get("visibility") == "private"
        self.repos.setdefault(repo_id, Repo(private=private))
        self.created.append(req)
        self.reply(h, 200, {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id})

    def info(self, h, g, _, __, ___) -> None:
        repo = self.repos.get(g["repo"])
        if repo is None:
            return self.missing(h, "repo")
        self.reply(h, 200, {"id": g["repo"], "sha": repo.sha, "private": repo.private,
                            "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    def preupload(self, h, g, body, _, __) -> None:
        files = json.loads(body)["files"]
        self.reply(h, 200, {"files": [{"path": f["path"], "shouldIgnore": False,
                                       "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular"}
                                      for f in files]})

    def lfs_batch(self, h, g, body, _, __) -> None:
        objects = json.loads(body)["objects"]
        self.reply(h, 200, {"transfer": "basic", "objects": [
            {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"}}}
            for o in objects]})

    def lfs_upload(self, h, g, body, _, __) -> None:
        if hashlib.sha256(body).hexdigest() != g["oid"]:
            return self.reply(h, 400, {"error": "content does not match its oid"})
        self.blobs[g["oid"]] = body
        self.reply(h, 200, {})

    def commit(self, h, g, body, _, __) -> None:
        repo = self.repos.get(g["repo"])
        if repo is None:
            return self.missing(h, "repo")
        items = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        for item in items:
            value = item["value"]
            if item["key"] == "file":
                repo.files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                repo.files[value["path"]] = self.blobs[value["oid"]]
            elif item["key"] == "deletedFile":
                repo.files.pop(value["path"], None)
        header = next(i["value"] for i in items if i["key"] == "header")
        repo.commits.append({"summary": header.get("summary"), "files": [i["value"]["path"] for i in items
                                                                         if i["key"] in ("file", "lfsFile")]})
        repo.sha = hashlib.sha1(f"{g['repo']}{len(repo.commits)}".encode()).hexdigest()
        self.reply(h, 200, {"commitUrl": f"{self.url}/datasets/{g['repo']}/commit/{repo.sha}",
                            "commitOid": repo.sha, "pullRequestUrl": None})

    def tree(self, h, g, _, query, __) -> None:
        repo = self.repos.get(g["repo"])
        if repo is None:
            return self.missing(h, "repo")
        prefix = (g.get("sub") or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, dirs = [], set()
        for path in sorted(repo.files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if "/" in rest and not recursive:
                dirs.add((prefix + "/" if prefix else "") + rest.split("/")[0])
                continue
            entries.append(self.entry(repo, path))
        if prefix and not entries and not dirs:
            return self.missing(h, "file")
        self.reply(h, 200, [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in sorted(dirs)]
                   + entries)

    def paths_info(self, h, g, body, _, __) -> None:
        repo = self.repos.get(g["repo"])
        if repo is None:
            return self.missing(h, "repo")
        text = body.decode()
        paths = json.loads(text)["paths"] if text.startswith("{") else parse_qs(text).get("paths", [])
        self.reply(h, 200, [self.entry(repo, p) for p in paths if p in repo.files])

    def resolve(self, h, g, _, __, method) -> None:
        repo = self.repos.get(g["repo"])
        if repo is None:
            return self.missing(h, "repo", method)
        if g["file"] not in repo.files:
            return self.missing(h, "file", method)
        data = repo.files[g["file"]]
        etag = hashlib.sha1(data).hexdigest()
        self.reply(h, 200, None, {"ETag": f'"{etag}"', "X-Repo-Commit": repo.sha}, raw=data, method=method)

    @staticmethod
    def entry(repo: Repo, path: str) -> dict[str, Any]:
        data = repo.files[path]
        return {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}

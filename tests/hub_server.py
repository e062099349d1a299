"""A minimal in-memory imitation of the Hugging Face Hub HTTP API, for tests.

`LocalHub` serves, on 127.0.0.1 and a port the OS picks, the part of the Hub's API that the real
`huggingface_hub` client (2.x) and `transformers` use to create repositories and branches, upload folders
(every file is committed inline as a "regular" git blob, so no LFS or Xet upload is ever needed), list and
download files and read repository info. Point a *new* process at it with ``HF_ENDPOINT=hub.url`` (the
client reads the variable when it is imported), or, in a process where HF_HUB_OFFLINE is not set, pass
``endpoint=hub.url`` to `HfApi`::

    with LocalHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test"}
        subprocess.run([sys.executable, "upload.py"], env=env, check=True)
        assert hub.files("user/tiny")["config.json"] == b"..."

Everything lives in memory: `hub.repos` maps a repository id (``"user/name"`` for models,
``"datasets/user/name"`` or ``"spaces/user/name"`` for the other types, as in the Hub's URLs) to a `Repo`,
whose `branches` map a branch name to its history, a list of `Commit` (oldest first; each commit holds the
whole tree, ``path -> bytes``, and a new 40-hex sha).

Errors follow the Hub's conventions, which the client turns into its typed exceptions: 404 with the
``X-Error-Code`` header ``RepoNotFound``, ``RevisionNotFound`` or ``EntryNotFound``; 409 when a repository
or branch exists already; 401 for a write without a token. For tests, `fail_next_commits` makes the next
commits answer 500, every request is recorded in `requests` and every ``Authorization`` header in
`tokens_seen`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["Commit", "HubError", "LocalHub", "Repo", "git_blob_sha"]

# URL prefix of each repository type (the Hub's `/api/{prefix}/...` and `/{prefix}/user/name/resolve/...`).
TYPE_PREFIXES = {"model": "models", "dataset": "datasets", "space": "spaces", "kernel": "kernels"}
PREFIX_TYPES = {prefix: repo_type for repo_type, prefix in TYPE_PREFIXES.items()}

# What the Hub's "initial commit" of every new repository holds (shortened).
GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob holding `data` (what the Hub gives as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    """The current UTC time in the Hub's format, e.g. ``2024-05-01T12:00:00.123Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An error answer: HTTP status, the Hub's ``X-Error-Code`` (or None) and a message."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}  # more fields of the JSON body


@dataclass
class Commit:
    """One commit: its sha, message, parent's sha and the whole tree it leaves (path -> content)."""

    oid: str
    title: str
    message: str
    parent: str | None
    files: dict[str, bytes]
    author: str
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    """A repository: its branches (name -> history of commits, oldest first) and every commit by sha.

    Pull requests opened by a commit with ``create_pr=1`` are branches named ``refs/pr/N``.
    """

    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, list[Commit]] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> Commit:
        """The commit a branch name (or ``refs/heads/<name>``), a PR ref or a full commit sha points to."""
        name = revision.removeprefix("refs/heads/")
        if name in self.branches:
            return self.branches[name][-1]
        if SHA_RE.match(revision) and revision in self.commits:
            return self.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def history(self, revision: str) -> list[Commit]:
        """The commits reachable from `revision`, newest first."""
        commit: Commit | None = self.resolve(revision)
        out = []
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out


class LocalHub:
    """An imitation Hub over HTTP on 127.0.0.1, started by the constructor in a daemon thread.

    Args:
        username: Who `/api/whoami-v2` says the token belongs to; the author of every commit.
        valid_tokens: If given, only these tokens are accepted: any other ``Authorization`` header gets the
            Hub's 401 "Invalid credentials in Authorization header", on reads too. None: any token is valid.

    Attributes:
        url: ``http://127.0.0.1:<port>``, the value for ``HF_ENDPOINT``.
        repos: Repository id (prefixed ``datasets/`` etc. for non-models) -> `Repo`.
        requests: Every request as ``(method, path)``, the path URL-decoded and without its query string.
        tokens_seen: Every ``Authorization`` header value received, e.g. ``{"Bearer hf_abc"}``.
        fail_next_commits: The next this-many commit requests answer `commit_failure_status` (and change
            nothing); counts down to 0.
        commit_failure_status: The status of an injected commit failure, 500 by default. Note the client
            retries a 5xx commit made by `upload_folder` (when `hf_xet` is installed) up to 5 times with
            1, 2, 4, 8, 8 s pauses; a 4xx status (or ``HF_HUB_DISABLE_XET=1``) makes one failure surface.
    """

    def __init__(self, username: str = "user", valid_tokens: set[str] | None = None):
        self.username = username
        self.valid_tokens = set(valid_tokens) if valid_tokens is not None else None
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens_seen: set[str] = set()
        self.fail_next_commits = 0
        self.commit_failure_status = 500
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ state, also for tests to seed or inspect

    @staticmethod
    def key(repo_id: str, repo_type: str = "model") -> str:
        """The `repos` key of a repository: its id, prefixed ``datasets/``, ``spaces/``... unless a model."""
        return repo_id if repo_type == "model" else f"{TYPE_PREFIXES[repo_type]}/{repo_id}"

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The repository, or a 404 RepoNotFound `HubError`."""
        try:
            return self.repos[self.key(repo_id, repo_type)]
        except KeyError:
            raise HubError(404, "Repository not found", "RepoNotFound") from None

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False) -> Repo:
        """A new repository whose `main` holds one commit with a `.gitattributes`, as on the Hub; 409 if it exists."""
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise HubError(400, f"Invalid repo id: {repo_id!r} (expected namespace/name)")
        with self._lock:
            key = self.key(repo_id, repo_type)
            if key in self.repos:
                # The client's create_repo(exist_ok=True) reads the url from this 409 answer, as from a 200.
                url = self._repo_url(repo_id, repo_type)
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
            self.repos[key] = repo
            self._add_commit(repo, None, "initial commit", "", {".gitattributes": GITATTRIBUTES})
            return repo

    def create_branch(self, repo_id: str, branch: str, *, start: str | None = None, repo_type: str = "model") -> None:
        """A new branch at `start` (a revision; default the head of main); 409 if it exists."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            head = repo.resolve(start or "main")
            repo.branches[branch] = repo.history(head.oid)[::-1]

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        deletions: Iterable[str] = (),
        message: str = "Upload files",
        description: str = "",
        branch: str = "main",
        repo_type: str = "model",
        parent_commit: str | None = None,
    ) -> Commit:
        """Commit `files` (added or replaced) and `deletions` (file paths, or folders ending with ``/``) to `branch`."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            name = branch.removeprefix("refs/heads/")
            if name not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.branches[name][-1]
            if parent_commit is not None and parent_commit != head.oid:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. ({head.oid})")
            tree = dict(head.files)
            for path in deletions:
                if path.endswith("/"):
                    gone = [p for p in tree if p.startswith(path)]
                    if not gone:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in gone:
                        del tree[p]
                elif tree.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            tree.update(files or {})
            return self._add_commit(repo, name, message, description, tree)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The tree at `revision`: path -> content."""
        with self._lock:
            return dict(self.repo(repo_id, repo_type).resolve(revision).files)

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[Commit]:
        """The commits reachable from `revision`, newest first (the first is the repository's initial commit)."""
        with self._lock:
            return self.repo(repo_id, repo_type).history(revision)

    def _add_commit(self, repo: Repo, branch: str | None, title: str, message: str, tree: dict) -> Commit:
        """Record a commit of `tree` on top of `branch` (None: the first commit, which creates main)."""
        parent = repo.branches[branch][-1].oid if branch else None
        seed = f"{repo.repo_id}\n{parent}\n{title}\n{next(self._counter)}\n{sorted(tree)}".encode()
        commit = Commit(
            oid=hashlib.sha1(seed).hexdigest(),
            title=title,
            message=message,
            parent=parent,
            files=tree,
            author=self.username,
        )
        repo.commits[commit.oid] = commit
        repo.branches.setdefault(branch or "main", []).append(commit)
        return commit

    # ------------------------------------------------------------------ HTTP API

    def handle(self, method: str, raw_path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """Answer one request: (status, headers, body). Raises `HubError` for an error answer."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        with self._lock:  # one request at a time: the handlers read and change shared dicts
            self.requests.append((method, unquote(split.path)))
            token = self._authenticate(headers.get("Authorization"))
            return self._route(method, segments, query, token, headers, body)

    def _route(self, method: str, segments: list[str], query: dict, token: str | None, headers, body: bytes):
        """Dispatch to the `/api/...` routes or the file downloads."""
        if segments[:1] == ["api"]:
            return self._api(method, segments[1:], query, token, headers, body)
        # /[datasets/]user/name/resolve/{revision}/{path}
        repo_type = "model"
        if segments and segments[0] in PREFIX_TYPES and segments[0] != "models" and len(segments) > 4:
            repo_type, segments = PREFIX_TYPES[segments[0]], segments[1:]
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._readable(f"{segments[0]}/{segments[1]}", repo_type, token)
            return self._resolve(repo, segments[3], "/".join(segments[4:]), headers)
        raise HubError(404, f"Not found: {method} /{'/'.join(segments)}")

    def _authenticate(self, authorization: str | None) -> str | None:
        """The request's token (None without one); 401 for a token that `valid_tokens` does not hold."""
        if not authorization:
            return None
        self.tokens_seen.add(authorization)
        token = authorization.removeprefix("Bearer ").strip()
        if not token or (self.valid_tokens is not None and token not in self.valid_tokens):
            raise HubError(401, INVALID_CREDENTIALS, headers={"X-Error-Message": INVALID_CREDENTIALS})
        return token

    @staticmethod
    def _require_token(token: str | None) -> None:
        """401 for a write without a token."""
        if token is None:
            raise HubError(401, INVALID_CREDENTIALS, headers={"X-Error-Message": INVALID_CREDENTIALS})

    def _readable(self, repo_id: str, repo_type: str, token: str | None) -> Repo:
        """The repository if it exists and the caller may read it (private repositories need a token)."""
        repo = self.repo(repo_id, repo_type)
        if repo.private and token is None:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def _api(self, method: str, seg: list[str], query: dict, token: str | None, headers, body: bytes):
        """The `/api/...` routes."""
        if seg == ["whoami-v2"] and method == "GET":
            self._require_token(token)
            return _json(200, self._whoami())
        if seg == ["validate-yaml"] and method == "POST":
            return _json(200, {"errors": [], "warnings": []})
        if seg == ["repos", "create"] and method == "POST":
            self._require_token(token)
            data = json.loads(body or b"{}")
            name, organization = data.get("name", ""), data.get("organization")
            repo_id = name if "/" in name else f"{organization or self.username}/{name}"
            repo_type = data.get("type") or "model"
            private = bool(data.get("private")) or data.get("visibility") == "private"
            self.create_repo(repo_id, repo_type=repo_type, private=private)
            return _json(200, {"url": self._repo_url(repo_id, repo_type), "name": repo_id, "id": repo_id})
        if seg == ["repos", "delete"] and method == "DELETE":
            self._require_token(token)
            data = json.loads(body or b"{}")
            repo_id = f"{data.get('organization') or self.username}/{data['name']}"
            with self._lock:
                self.repo(repo_id, data.get("type") or "model")
                del self.repos[self.key(repo_id, data.get("type") or "model")]
            return _json(200, {})

        # /api/{models|datasets|spaces}/{user}/{name}[/{action}/{revision}[/{path}]]
        if len(seg) < 3 or seg[0] not in PREFIX_TYPES:
            raise HubError(404, f"Not found: {method} /api/{'/'.join(seg)}")
        repo_type, repo_id, action, rest = PREFIX_TYPES[seg[0]], f"{seg[1]}/{seg[2]}", seg[3:4], seg[4:]
        route = (method, action[0] if action else "")

        if route == ("GET", "") or (route == ("GET", "revision") and rest):
            repo = self._readable(repo_id, repo_type, token)
            return _json(200, self._info(repo, "/".join(rest) or "main", blobs=query.get("blobs") == "true"))
        if route == ("GET", "tree") and rest:
            repo = self._readable(repo_id, repo_type, token)
            recursive, expand = query.get("recursive") in ("true", "1"), query.get("expand") in ("true", "1")
            return _json(200, self._tree(repo, rest[0], "/".join(rest[1:]), recursive, expand))
        if route == ("POST", "paths-info") and rest:
            repo = self._readable(repo_id, repo_type, token)
            form = parse_qs(body.decode())
            return _json(200, self._paths_info(repo, rest[0], form.get("paths", [])))
        if route == ("GET", "refs"):
            return _json(200, self._refs(self._readable(repo_id, repo_type, token)))
        if route == ("GET", "commits") and rest:
            repo = self._readable(repo_id, repo_type, token)
            return _json(200, [self._commit_json(c) for c in repo.history(rest[0])])
        if route == ("POST", "branch") and rest:
            self._require_token(token)
            start = json.loads(body or b"{}").get("startingPoint")
            self.create_branch(repo_id, "/".join(rest), start=start, repo_type=repo_type)
            return _json(200, {})
        if route == ("DELETE", "branch") and rest:
            self._require_token(token)
            with self._lock:
                repo = self.repo(repo_id, repo_type)
                if "/".join(rest) not in repo.branches or rest == ["main"]:
                    raise HubError(404, f"Invalid rev id: {'/'.join(rest)}", "RevisionNotFound")
                del repo.branches["/".join(rest)]
            return _json(200, {})
        if route == ("POST", "preupload") and rest:
            self._require_token(token)
            return _json(200, self._preupload(self.repo(repo_id, repo_type), rest[0], json.loads(body)))
        if route == ("POST", "commit") and rest:
            self._require_token(token)
            return self._commit_request(repo_id, repo_type, "/".join(rest), query, body)
        raise HubError(404, f"Not found: {method} /api/{'/'.join(seg)}")

    def _whoami(self) -> dict:
        """A fake user with a write token."""
        return {
            "type": "user",
            "id": "0" * 24,
            "name": self.username,
            "fullname": self.username.title(),
            "email": f"{self.username}@example.com",
            "emailVerified": True,
            "isPro": False,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local-hub", "role": "write"}},
        }

    def _repo_url(self, repo_id: str, repo_type: str) -> str:
        """The repository's page, e.g. ``http://127.0.0.1:1234/user/name`` or ``.../datasets/user/name``."""
        prefix = "" if repo_type == "model" else f"{TYPE_PREFIXES[repo_type]}/"
        return f"{self.url}/{prefix}{repo_id}"

    def _info(self, repo: Repo, revision: str, blobs: bool) -> dict:
        """`model_info` / `dataset_info` / `repo_info`: id, sha, siblings, card data from README.md's front matter."""
        commit = repo.resolve(revision)
        card = _card_data(commit.files.get("README.md"))
        siblings = []
        for path in sorted(commit.files):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=len(commit.files[path]), blobId=git_blob_sha(commit.files[path]))
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": card["tags"] if isinstance(card.get("tags"), list) else [],
            "siblings": siblings,
            "usedStorage": sum(len(data) for data in commit.files.values()),
        }
        if card:
            info["cardData"] = card
        if repo.repo_type == "model":
            info.update(pipeline_tag=card.get("pipeline_tag"), library_name=card.get("library_name"), spaces=[])
            try:
                config = json.loads(commit.files["config.json"])
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            except (KeyError, ValueError, TypeError):
                pass
        return info

    def _tree(self, repo: Repo, revision: str, path: str, recursive: bool, expand: bool) -> list[dict]:
        """`list_repo_tree`: the folders and files under `path` (its direct children unless `recursive`)."""
        commit = repo.resolve(revision)
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        under = sorted(p for p in commit.files if p.startswith(prefix))
        if path and not under:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        folders, files = set(), []
        for p in under:
            parts = p[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                files.append(p)
        entries = [self._entry(repo, commit, folder, expand, folder=True) for folder in sorted(folders)]
        return entries + [self._entry(repo, commit, p, expand) for p in files]

    def _paths_info(self, repo: Repo, revision: str, paths: list[str]) -> list[dict]:
        """`get_paths_info`: the entries among `paths` that exist (files or folders); missing ones are left out."""
        commit = repo.resolve(revision)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._entry(repo, commit, path, expand=False))
            elif any(p.startswith(f"{path}/") for p in commit.files):
                out.append(self._entry(repo, commit, path, expand=False, folder=True))
        return out

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool, folder: bool = False) -> dict:
        """One tree entry as the Hub lists it (with its last commit if `expand`)."""
        if folder:
            listing = sorted((p, git_blob_sha(d)) for p, d in commit.files.items() if p.startswith(f"{path}/"))
            entry = {"type": "directory", "oid": hashlib.sha1(repr(listing).encode()).hexdigest(), "size": 0}
        else:
            data = commit.files[path]
            entry = {"type": "file", "oid": git_blob_sha(data), "size": len(data)}
        entry["path"] = path
        if expand:
            last = commit
            for older in repo.history(commit.oid)[1:]:
                if _subtree(older.files, path, folder) != _subtree(last.files, path, folder):
                    break
                last = older
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return entry

    def _refs(self, repo: Repo) -> dict:
        """`list_repo_refs`: branches and pull requests (no tags or converts)."""

        def ref(name: str) -> dict:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": repo.branches[name][-1].oid}

        return {
            "branches": [ref(name) for name in repo.branches if not name.startswith("refs/pr/")],
            "converts": [],
            "tags": [],
            "pullRequests": [ref(name) for name in repo.branches if name.startswith("refs/pr/")],
        }

    @staticmethod
    def _commit_json(commit: Commit) -> dict:
        """One item of `list_repo_commits`."""
        return {
            "id": commit.oid,
            "title": commit.title,
            "message": commit.message,
            "authors": [{"user": commit.author}],
            "date": commit.date,
        }

    @staticmethod
    def _preupload(repo: Repo, revision: str, payload: dict) -> dict:
        """Every file is to be sent inline ("regular"); `oid` is the current blob's, so unchanged files are skipped."""
        current = repo.resolve(revision).files
        return {
            "files": [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha(current[f["path"]]) if f["path"] in current else None,
                }
                for f in payload.get("files", [])
            ],
            "commitOid": repo.resolve(revision).oid,
        }

    def _commit_request(self, repo_id: str, repo_type: str, revision: str, query: dict, body: bytes):
        """`create_commit`: the NDJSON body is a header line, then one line per file added or deleted."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            if self.fail_next_commits > 0:
                self.fail_next_commits -= 1
                raise HubError(self.commit_failure_status, "Injected failure (LocalHub.fail_next_commits)")
            header, files, deletions = {}, {}, []
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item.get("key"), item.get("value", {})
                if key == "header":
                    header = value
                elif key == "file":
                    content = value.get("content", "")
                    files[value["path"]] = (
                        base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    )
                elif key == "deletedFile":
                    deletions.append(value["path"])
                elif key == "deletedFolder":
                    deletions.append(value["path"].rstrip("/") + "/")
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}: LocalHub only takes inline files")
            branch, pr_url = revision, None
            if query.get("create_pr") in ("1", "true"):
                number = 1 + sum(name.startswith("refs/pr/") for name in repo.branches)
                branch = f"refs/pr/{number}"
                repo.branches[branch] = list(repo.history(revision)[::-1])
                pr_url = f"{self._repo_url(repo_id, repo_type)}/discussions/{number}"
            commit = self.commit(
                repo_id,
                files,
                deletions=deletions,
                message=header.get("summary") or "Upload files",
                description=header.get("description", ""),
                branch=branch,
                repo_type=repo_type,
                parent_commit=header.get("parentCommit"),
            )
        return _json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo_id, repo_type)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            },
        )

    @staticmethod
    def _resolve(repo: Repo, revision: str, path: str, headers) -> tuple[int, dict, bytes]:
        """A file's content (``Range: bytes=a-b`` honoured) with the headers `hf_hub_download` needs."""
        commit = repo.resolve(revision)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        out = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_sha(data)}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("Range", "") or "")
        if match and (match.group(1) or match.group(2)):
            start, end = match.groups()
            if start:
                first, last = int(start), min(int(end), len(data) - 1) if end else len(data) - 1
            else:
                first, last = max(len(data) - int(end), 0), len(data) - 1
            if first >= len(data):
                return 416, {**out, "Content-Range": f"bytes */{len(data)}"}, b""
            out["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return 206, out, data[first : last + 1]
        return 200, out, data


def _subtree(files: dict[str, bytes], path: str, folder: bool) -> object:
    """A file's content, or a folder's files; to find the last commit that changed either."""
    if not folder:
        return files.get(path)
    return {p: d for p, d in files.items() if p.startswith(f"{path}/")}


def _card_data(readme: bytes | None) -> dict:
    """The YAML front matter of a README.md (the model card's metadata), or {}."""
    if not readme:
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", readme.decode("utf-8", "replace"), re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _json(status: int, payload) -> tuple[int, dict, bytes]:
    """A JSON answer."""
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to `hub` (HTTP/1.1 keep-alive; every answer has a Content-Length)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # an idle keep-alive connection's thread ends after this many seconds

        def _body(self) -> bytes:
            """The request body, by Content-Length or chunked transfer encoding."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self) -> None:
            body = self._body()
            try:
                status, headers, payload = hub.handle(self.command, self.path, self.headers, body)
            except HubError as error:
                status, payload = error.status, json.dumps({"error": error.message, **error.extra}).encode()
                headers = {"Content-Type": "application/json", **error.headers}
                if error.code:
                    headers["X-Error-Code"] = error.code
                headers.setdefault("X-Error-Message", error.message.encode("ascii", "backslashreplace").decode())
            except Exception as error:  # a bug here: answer 500 rather than drop the connection
                status, headers = 500, {"Content-Type": "application/json"}
                payload = json.dumps({"error": f"LocalHub: {type(error).__name__}: {error}"}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

        def log_message(self, format, *args) -> None:
            """Quiet: `hub.requests` records what was asked."""

    return Handler


def hub_env(hub: LocalHub, home: Path, token: str, **extra: str) -> dict:
    """This process's environment without its HF_* settings, pointed at `hub` with a token and cache of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="0",
        HF_TOKEN=token,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env

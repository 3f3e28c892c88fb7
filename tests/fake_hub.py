"""An in-process fake of the Hugging Face Hub's HTTP API, for offline tests of push and pull code.

huggingface_hub sends every request through one shared ``httpx2.Client``;
``FakeHub.install()`` swaps in a client whose ``MockTransport`` answers here,
so ``HfApi``, ``hf_hub_download``, ``snapshot_download``, ``from_pretrained``
and ``load_dataset`` all talk to this object: no sockets.

It keeps repos (model, dataset, space) with branches of commits, records every
commit (message, files added and deleted) and serves the files back (API info,
tree, paths-info, resolve). Every file is taken in "regular" upload mode (base64
inside the commit), so no LFS/Xet storage is needed. Fault injection:
``hub.fail = lambda request: httpx2.Response(500)`` (or raise
``httpx2.ConnectError``) answers matching requests before the fake does.

Use the ``fake_hub`` pytest fixture from ``conftest.py``::

    def test_push(fake_hub):
        HfApi().create_repo("org/x")
        assert fake_hub.commits == []
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote

import httpx2
import yaml

ENDPOINT = "https://huggingface.co"
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_ID = r"(?P<id>[^/]+/[^/]+)"


@dataclass
class Commit:
    repo_type: str
    repo_id: str
    revision: str
    message: str
    oid: str
    added: dict[str, bytes]
    deleted: list[str]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    branches: dict[str, list[Commit]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # like the real Hub, a new repo starts with one commit holding .gitattributes (not in FakeHub.commits)
        initial = Commit(
            self.repo_type,
            self.repo_id,
            "main",
            "initial commit",
            _git_oid(self.repo_id.encode()),
            {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
            [],
        )
        self.branches.setdefault("main", [initial])

    def files(self, revision: str = "main") -> dict[str, bytes]:
        if revision not in self.branches:  # a commit sha
            for commits in self.branches.values():
                for i, c in enumerate(commits):
                    if c.oid == revision:
                        return _apply(commits[: i + 1])
            raise KeyError(revision)
        return _apply(self.branches[revision])

    def sha(self, revision: str = "main") -> str:
        if revision not in self.branches:
            return revision
        return self.branches[revision][-1].oid


def _apply(commits: list[Commit]) -> dict[str, bytes]:
    tree: dict[str, bytes] = {}
    for c in commits:
        for path in c.deleted:
            tree = {p: b for p, b in tree.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        tree.update(c.added)
    return tree


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _json(data, status: int = 200, headers: dict | None = None) -> httpx2.Response:
    return httpx2.Response(status, json=data, headers=headers)


def _error(status: int, message: str, code: str | None = None) -> httpx2.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return httpx2.Response(status, json={"error": message}, headers=headers)


class FakeHub:
    """A Hub in memory. ``tokens``: the access tokens it accepts (write access to everything)."""

    def __init__(self, tokens: tuple[str, ...] = ("hf_fake_write_token",), user: str = "tester"):
        self.tokens = set(tokens)
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commits: list[Commit] = []
        self.requests: list[tuple[str, str]] = []
        self.fail: Callable[[httpx2.Request], httpx2.Response | None] | None = None
        self._routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create),
            ("DELETE", r"/api/repos/delete", self._delete),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_ID}/preupload/(?P<rev>.+)", self._preupload),
            ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_ID}/commit/(?P<rev>.+)", self._commit),
            ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_ID}/branch/(?P<rev>.+)", self._branch),
            ("GET", rf"/api/(?P<t>models|datasets|spaces)/{_ID}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._tree),
            ("POST", rf"/api/(?P<t>models|datasets|spaces)/{_ID}/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("GET", rf"/api/(?P<t>models|datasets|spaces)/{_ID}(?:/revision/(?P<rev>.+))?", self._info),
            ("GET|HEAD", rf"/(?P<t>datasets/|spaces/|){_ID}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]

    # ----------------------------------------------------------------- wiring
    def install(self) -> FakeHub:
        from huggingface_hub.utils import _http, set_client_factory

        # keep huggingface_hub's own request hook (HF_HUB_OFFLINE check, request ids) as the real client does
        set_client_factory(
            lambda: httpx2.Client(
                transport=httpx2.MockTransport(self.handler),
                follow_redirects=True,
                event_hooks={"request": [_http.hf_request_event_hook]},
            )
        )
        return self

    @staticmethod
    def buffered_preupload(original: Callable) -> Callable:
        """A wrapper for ``HfApi.preupload_lfs_files`` that reads every file to upload into memory first.

        ``Dataset(Dict).push_to_hub`` writes each shard to a temporary file and
        deletes it right after preupload (on the real Hub the bytes went to LFS
        storage by then); here files travel inside the commit, so they must
        outlive preupload. The ``fake_hub`` fixture installs this wrapper.
        """

        def preupload_lfs_files(self, repo_id, additions, *args, **kwargs):
            additions = list(additions)
            for op in additions:
                if isinstance(op.path_or_fileobj, (str, Path)):
                    op.path_or_fileobj = Path(op.path_or_fileobj).read_bytes()
            return original(self, repo_id, additions, *args, **kwargs)

        return preupload_lfs_files

    @staticmethod
    def uninstall() -> None:
        from huggingface_hub.utils import _http, set_client_factory

        set_client_factory(_http.default_client_factory)

    # ------------------------------------------------------------- inspection
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        return self.repo(repo_id, repo_type).files(revision)

    # ---------------------------------------------------------------- handler
    def handler(self, request: httpx2.Request) -> httpx2.Response:
        path = unquote(request.url.path)
        self.requests.append((request.method, path))
        if self.fail is not None:
            injected = self.fail(request)
            if injected is not None:
                return injected
        for methods, pattern, fn in self._routes:
            if request.method in methods.split("|"):
                match = re.fullmatch(pattern, path)
                if match:
                    denied = self._auth(request)
                    return denied or fn(request, **{k: v for k, v in match.groupdict().items()})
        return _error(404, f"fake hub: no route for {request.method} {path}")

    def _auth(self, request: httpx2.Request) -> httpx2.Response | None:
        header = request.headers.get("authorization", "")
        if header and header.removeprefix("Bearer ") not in self.tokens:
            return _error(401, "Invalid credentials in Authorization header")
        if not header and request.method in ("POST", "DELETE", "PUT"):
            return _error(401, "You must be authenticated to do this")
        return None

    def _find(self, t: str, repo_id: str) -> Repo | None:
        return self.repos.get((_TYPES.get(t, t), repo_id))

    def _not_found(self, repo_id: str) -> httpx2.Response:
        return _error(404, f"Repository Not Found for url: {repo_id}.", "RepoNotFound")

    # ----------------------------------------------------------------- routes
    def _whoami(self, request):
        return _json(
            {
                "type": "user",
                "name": self.user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )

    def _create(self, request):
        body = json.loads(request.content)
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        if (repo_type, repo_id) in self.repos:
            return _error(409, "You already created this repo")
        self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, bool(body.get("private")), body.get("sdk"))
        return _json({"url": f"{ENDPOINT}/{PREFIX[repo_type]}{repo_id}", "name": repo_id})

    def _delete(self, request):
        body = json.loads(request.content)
        key = (body.get("type") or "model", f"{body.get('organization') or self.user}/{body['name']}")
        if self.repos.pop(key, None) is None:
            return self._not_found(key[1])
        return _json({})

    def _validate_yaml(self, request):
        content = json.loads(request.content)["content"]
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as err:
            return _json({"errors": [{"message": f"invalid YAML: {err}"}]}, 400)
        if match and not isinstance(meta, dict):
            return _json({"errors": [{"message": "metadata must be a mapping"}]}, 400)
        return _json({"errors": [], "warnings": []})

    def _preupload(self, request, t, id, rev):
        if self._find(t, id) is None:
            return self._not_found(id)
        files = json.loads(request.content)["files"]
        return _json(
            {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]}
        )

    def _commit(self, request, t, id, rev):
        repo = self._find(t, id)
        if repo is None:
            return self._not_found(id)
        rev = unquote(rev)
        if rev not in repo.branches:
            return _error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        added, deleted = {}, []
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif item["key"] != "header":
                return _error(400, f"fake hub: unsupported commit operation {item['key']}")
        oid = hashlib.sha1(f"{id}{rev}{len(self.commits)}{time.time()}".encode()).hexdigest()
        commit = Commit(repo.repo_type, id, rev, header["summary"], oid, added, deleted)
        repo.branches[rev].append(commit)
        self.commits.append(commit)
        url = f"{ENDPOINT}/{PREFIX[repo.repo_type]}{id}/commit/{oid}"
        return _json({"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    def _branch(self, request, t, id, rev):
        repo = self._find(t, id)
        if repo is None:
            return self._not_found(id)
        if rev in repo.branches:
            return _error(409, f"Branch {rev} already exists")
        repo.branches[rev] = list(repo.branches["main"])
        return _json({})

    def _repo_files(self, t, id, rev):
        repo = self._find(t, id)
        if repo is None:
            return None, self._not_found(id)
        try:
            return repo, repo.files(unquote(rev or "main"))
        except KeyError:
            return None, _error(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _info(self, request, t, id, rev=None):
        repo, files = self._repo_files(t, id, rev)
        if repo is None:
            return files
        return _json(
            {
                "id": id,
                "_id": id,
                "sha": repo.sha(unquote(rev or "main")),
                "private": repo.private,
                "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())],
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "disabled": False,
                "gated": False,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
                **({"sdk": repo.sdk} if repo.sdk else {}),
            }
        )

    @staticmethod
    def _entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        entries, dirs = [], set()
        for path, data in sorted(files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                dirs.add("/".join(filter(None, [prefix, *parts[:depth]])))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "path": path, "size": len(data), "oid": _git_oid(data)})
        entries += [{"type": "directory", "path": d, "oid": _git_oid(d.encode()), "size": 0} for d in sorted(dirs)]
        return entries

    def _tree(self, request, t, id, rev, path=None):
        repo, files = self._repo_files(t, id, rev)
        if repo is None:
            return files
        recursive = request.url.params.get("recursive") in ("1", "true", "True")
        if path and path.strip("/") in files:
            return _error(404, f"{path} is a file", "EntryNotFound")
        entries = self._entries(files, path or "", recursive)
        if path and not entries:
            return _error(404, f"{path} does not exist on {rev}", "EntryNotFound")
        return _json(entries)

    def _paths_info(self, request, t, id, rev):
        repo, files = self._repo_files(t, id, rev)
        if repo is None:
            return files
        form = parse_qs(request.content.decode())
        paths = form.get("paths", [])
        if not paths and request.headers.get("content-type", "").startswith("application/json"):
            paths = json.loads(request.content).get("paths", [])
        out = []
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append({"type": "file", "path": p, "size": len(files[p]), "oid": _git_oid(files[p])})
            elif p in dirs:
                out.append({"type": "directory", "path": p, "oid": _git_oid(p.encode()), "size": 0})
        return _json(out)

    def _resolve(self, request, t, id, rev, path):
        repo, files = self._repo_files(t.rstrip("/") or "models", id, rev)
        if repo is None:
            return files
        if path not in files:
            return _error(404, f"Entry not found: {path}", "EntryNotFound")
        data = files[path]
        headers = {
            "X-Repo-Commit": repo.sha(unquote(rev)),
            "ETag": f'"{_git_oid(data)}"',
            "Content-Length": str(len(data)),
            "Accept-Ranges": "bytes",
        }
        rng = request.headers.get("range")
        if rng and request.method == "GET":
            start, _, end = rng.removeprefix("bytes=").partition("-")
            chunk = data[int(start) : (int(end) + 1 if end else None)]
            headers.update(
                {
                    "Content-Length": str(len(chunk)),
                    "Content-Range": f"bytes {start}-{int(start) + len(chunk) - 1}/{len(data)}",
                }
            )
            return httpx2.Response(206, content=chunk, headers=headers)
        return httpx2.Response(200, content=b"" if request.method == "HEAD" else data, headers=headers)

"""LocalHub (tests/hub_server.py) against the real `huggingface_hub` client and `transformers`.

The client reads HF_ENDPOINT when it is imported (and this session's conftest switches the Hub off), so
every client call runs in a new Python process whose HF_ENDPOINT is the local hub, with its own HF_HOME.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hub_server import GITATTRIBUTES, LocalHub, git_blob_sha, hub_env  # noqa: E402

TOKEN = "hf_localhub_test_token"
TEXTS = ["the movie was very good", "this film is not bad", "awful plot and acting", "i"]


@pytest.fixture
def hub():
    """A local hub for one test."""
    with LocalHub() as hub:
        yield hub


def run(script: str, env: dict, *args) -> dict:
    """Run `script` in a new Python process; what it prints last, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write `files` (relative path -> content) under `root`."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content), leaving out the client's `.cache` folder."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


CLIENT_SCRIPT = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

folder, dev_folder = sys.argv[1:3]
api = HfApi()
out = {"urls": [str(api.create_repo("user/tiny", exist_ok=True)) for _ in range(2)]}
first = api.upload_folder(repo_id="user/tiny", folder_path=folder, commit_message="first upload")
out.update(oid=first.oid, commit_url=first.commit_url, files=api.list_repo_files("user/tiny"))
out["download"] = hf_hub_download("user/tiny", "data/random.bin")
out["snapshot"] = snapshot_download("user/tiny")

api.create_branch("user/tiny", branch="dev")
dev = api.upload_folder(repo_id="user/tiny", folder_path=dev_folder, revision="dev", commit_message="dev upload")
out.update(dev_oid=dev.oid, dev_files=api.list_repo_files("user/tiny", revision="dev"))
out["dev_download"] = hf_hub_download("user/tiny", "notes.txt", revision="dev")
out["pinned_download"] = hf_hub_download("user/tiny", "notes.txt", revision=first.oid)
out["shas"] = [api.model_info("user/tiny").sha, api.model_info("user/tiny", revision="dev").sha]
out["branches"] = sorted(b.name for b in api.list_repo_refs("user/tiny").branches)
out["dev_commits"] = [c.title for c in api.list_repo_commits("user/tiny", revision="dev")]
out["unchanged_oid"] = api.upload_folder(repo_id="user/tiny", folder_path=folder).oid
out["tree"] = [(e.path, type(e).__name__) for e in api.list_repo_tree("user/tiny", path_in_repo="data")]
out["whoami"] = api.whoami()["name"]

out["errors"] = {}
for name, kwargs in {
    "missing_file": dict(repo_id="user/tiny", filename="nope.txt"),
    "missing_repo": dict(repo_id="user/nope", filename="notes.txt"),
    "missing_revision": dict(repo_id="user/tiny", filename="notes.txt", revision="nope"),
}.items():
    try:
        hf_hub_download(**kwargs)
    except Exception as error:
        out["errors"][name] = type(error).__name__
print(json.dumps(out))
"""


def test_client_upload_list_download(hub, tmp_path):
    """create_repo (twice, exist_ok), upload_folder, list, hf_hub_download, snapshot_download, a branch."""
    files = {
        "notes.txt": "a text file\n".encode(),
        "data/random.bin": os.urandom(4096),
        "data/nested/deep.txt": b"nested\n",
    }
    dev_files = {"notes.txt": b"changed on dev\n", "extra.txt": b"only on dev\n"}
    folder = write_tree(tmp_path / "folder", files)
    dev_folder = write_tree(tmp_path / "dev", dev_files)

    out = run(CLIENT_SCRIPT, hub_env(hub, tmp_path / "home", TOKEN), folder, dev_folder)

    assert out["urls"] == [f"{hub.url}/user/tiny"] * 2
    assert out["commit_url"] == f"{hub.url}/user/tiny/commit/{out['oid']}"
    assert sorted(out["files"]) == sorted([".gitattributes", *files])
    assert Path(out["download"]).read_bytes() == files["data/random.bin"]
    assert read_tree(Path(out["snapshot"])) == hub.files("user/tiny") == {".gitattributes": GITATTRIBUTES, **files}
    assert sorted(out["dev_files"]) == sorted([".gitattributes", *files, "extra.txt"])
    assert Path(out["dev_download"]).read_bytes() == dev_files["notes.txt"]
    assert Path(out["pinned_download"]).read_bytes() == files["notes.txt"]
    assert out["shas"] == [out["oid"], out["dev_oid"]]
    assert out["branches"] == ["dev", "main"]
    assert out["dev_commits"] == ["dev upload", "first upload", "initial commit"]
    assert out["unchanged_oid"] == out["oid"]  # nothing changed: the client skipped the commit
    assert out["tree"] == [["data/nested", "RepoFolder"], ["data/random.bin", "RepoFile"]]
    assert out["whoami"] == "user"
    assert out["errors"] == {
        "missing_file": "RemoteEntryNotFoundError",
        "missing_repo": "RepositoryNotFoundError",
        "missing_revision": "RevisionNotFoundError",
    }

    assert hub.files("user/tiny", "dev")["notes.txt"] == dev_files["notes.txt"]
    assert [c.oid for c in hub.history("user/tiny", "dev")[:2]] == [out["dev_oid"], out["oid"]]
    assert hub.tokens_seen == {f"Bearer {TOKEN}"}
    assert sum(1 for method, path in hub.requests if path.startswith("/api/models/user/tiny/commit/")) == 2


UPLOAD_SCRIPT = """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo(sys.argv[1], exist_ok=True)
print(json.dumps({"oid": api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2]).oid}))
"""

PIPELINE_SCRIPT = """
import json, sys
from transformers import pipeline
classifier = pipeline("text-classification", model=sys.argv[1])
print(json.dumps(classifier(json.loads(sys.argv[2]), top_k=None)))
"""


def tiny_bert_classifier(path: Path) -> Path:
    """A BertForSequenceClassification of 2 layers and hidden size 32 with a BertTokenizer of 23 words."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = "the a movie film good bad great awful was is very not i it this and plot acting".split()
    (path / "vocab").mkdir(parents=True)
    (path / "vocab" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(vocab=str(path / "vocab" / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    model_dir = path / "model"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def test_transformers_pipeline_from_hub(hub, tmp_path):
    """pipeline() by repo id, in a new process with an empty cache, scores as the local folder does."""
    from transformers import pipeline

    model_dir = tiny_bert_classifier(tmp_path)
    local = pipeline("text-classification", model=str(model_dir))(TEXTS, top_k=None)

    uploaded = run(UPLOAD_SCRIPT, hub_env(hub, tmp_path / "uploader", TOKEN), "user/tiny-bert", model_dir)
    assert hub.files("user/tiny-bert") == {".gitattributes": GITATTRIBUTES, **read_tree(model_dir)}

    fresh_home = tmp_path / "fresh"
    remote = run(PIPELINE_SCRIPT, hub_env(hub, fresh_home, TOKEN), "user/tiny-bert", json.dumps(TEXTS))

    for local_scores, remote_scores in zip(local, remote, strict=True):
        assert {s["label"]: pytest.approx(s["score"], abs=1e-6) for s in local_scores} == {
            s["label"]: s["score"] for s in remote_scores
        }
    snapshot = fresh_home / "hub" / "models--user--tiny-bert" / "snapshots" / uploaded["oid"]
    assert (snapshot / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    # transformers resolves main to its commit once, then fetches each file at that commit
    assert ("GET", f"/user/tiny-bert/resolve/{uploaded['oid']}/model.safetensors") in hub.requests
    # and lists the (missing: 404 EntryNotFound) chat templates folder
    assert ("GET", "/api/models/user/tiny-bert/tree/main/additional_chat_templates") in hub.requests


FAILING_UPLOAD_SCRIPT = """
import json, sys
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
api = HfApi()
api.create_repo("user/flaky", exist_ok=True)
out = {}
try:
    api.upload_folder(repo_id="user/flaky", folder_path=sys.argv[1])
except HfHubHTTPError as error:
    out["error"] = error.response.status_code
out["retry_oid"] = api.upload_folder(repo_id="user/flaky", folder_path=sys.argv[1]).oid
print(json.dumps(out))
"""


def commit_requests(hub: LocalHub) -> int:
    """How many commit requests the hub received."""
    return sum(1 for method, path in hub.requests if method == "POST" and "/commit/" in path)


def test_failed_commit_then_retry(hub, tmp_path):
    """fail_next_commits=1: upload_folder raises an HTTP 500 error, nothing is committed; the next call succeeds.

    HF_HUB_DISABLE_XET=1 makes upload_folder send one commit request, as when hf_xet is not installed.
    """
    folder = write_tree(tmp_path / "folder", {"weights.bin": os.urandom(2048)})
    hub.fail_next_commits = 1
    env = hub_env(hub, tmp_path / "home", TOKEN, HF_HUB_DISABLE_XET="1")

    out = run(FAILING_UPLOAD_SCRIPT, env, folder)

    assert out["error"] == 500
    assert hub.fail_next_commits == 0
    assert commit_requests(hub) == 2
    assert [c.oid for c in hub.history("user/flaky")][0] == out["retry_oid"]
    assert hub.files("user/flaky")["weights.bin"] == (folder / "weights.bin").read_bytes()


def test_client_retries_a_5xx_commit_itself(hub, tmp_path):
    """With hf_xet installed, upload_folder retries a commit that answered 5xx (after 1 s): no error surfaces.

    A 4xx `commit_failure_status` is not retried.
    """
    folder = write_tree(tmp_path / "folder", {"a.txt": b"a\n"})
    hub.fail_next_commits = 1

    out = run(FAILING_UPLOAD_SCRIPT, hub_env(hub, tmp_path / "home", TOKEN), folder)

    assert "error" not in out
    assert commit_requests(hub) == 2  # the failed one, then the client's own retry
    assert hub.history("user/flaky")[0].oid == out["retry_oid"]

    hub.fail_next_commits, hub.commit_failure_status = 1, 422
    write_tree(folder, {"b.txt": b"b\n"})
    out = run(FAILING_UPLOAD_SCRIPT, hub_env(hub, tmp_path / "home", TOKEN), folder)
    assert out["error"] == 422
    assert sorted(hub.files("user/flaky")) == [".gitattributes", "a.txt", "b.txt"]


def request(hub: LocalHub, method: str, path: str, token: str | None = None, data: bytes | None = None):
    """(status, headers) of one raw HTTP request to the hub."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(hub.url + path, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def test_raw_http_errors_and_auth(tmp_path):
    """Writes need a token; missing repos, revisions and files answer 404 with the Hub's X-Error-Code."""
    with LocalHub(valid_tokens={TOKEN}) as hub:
        hub.create_repo("user/raw", private=False)
        hub.commit("user/raw", {"dir/f.txt": b"content"}, message="add f")
        create = json.dumps({"name": "new", "organization": "user", "type": "model"}).encode()

        assert request(hub, "POST", "/api/repos/create", data=create)[0] == 401
        assert request(hub, "POST", "/api/repos/create", token="wrong", data=create)[0] == 401
        assert request(hub, "POST", "/api/repos/create", token=TOKEN, data=create)[0] == 200
        assert request(hub, "POST", "/api/repos/create", token=TOKEN, data=create)[0] == 409
        assert hub.tokens_seen == {"Bearer wrong", f"Bearer {TOKEN}"}

        status, headers = request(hub, "HEAD", "/user/raw/resolve/main/dir%2Ff.txt")
        assert status == 200
        assert headers["ETag"] == f'"{git_blob_sha(b"content")}"'
        assert headers["X-Repo-Commit"] == hub.history("user/raw")[0].oid
        assert headers["Content-Length"] == "7"
        for path, code in [
            ("/user/missing/resolve/main/f.txt", "RepoNotFound"),
            ("/user/raw/resolve/nope/dir/f.txt", "RevisionNotFound"),
            ("/user/raw/resolve/main/nope.txt", "EntryNotFound"),
            ("/api/models/user/raw/tree/main/nope", "EntryNotFound"),
        ]:
            status, headers = request(hub, "GET", path)
            assert (status, headers["X-Error-Code"]) == (404, code), path

        hub.create_repo("user/secret", private=True)
        assert request(hub, "GET", "/api/models/user/secret")[0] == 401
        assert request(hub, "GET", "/api/models/user/secret", token=TOKEN)[0] == 200

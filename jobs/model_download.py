"""The model-download Job: put the model onto the model store once, resumably.

Runs in the cluster (`python -m jobs.model_download`) with huggingface_hub installed;
no Pulumi import. Idempotent: a finished download leaves a marker file naming the model, the
requested revision and the commit it resolved to; the next run sees it and does nothing. An
unfinished one is resumed (snapshot_download skips complete files). Transient hub errors are
retried here with exponential backoff, and the Job's backoffLimit retries whole pods.

The layout `<root>/<org>/<name>/<revision>` is shared with the serving graph (`model_path`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

MARKER = ".benchlab-download.json"
ATTEMPTS = 4
FIRST_DELAY_SECONDS = 30


def model_path(root: str | Path, model_id: str, revision: str) -> Path:
    """Where a model revision lives on the model store."""
    return Path(root) / model_id / revision


def completed(target: Path, model_id: str, revision: str) -> dict | None:
    """The marker of a finished download of exactly this model and revision, else None."""
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("model") == model_id and marker.get("revision") == revision:
        return marker
    return None


def with_retries(action: Callable[[], Any], attempts: int = ATTEMPTS,
                 first_delay: float = FIRST_DELAY_SECONDS,
                 sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run `action`; on an exception wait first_delay, 2x, 4x, ... and try again."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:  # noqa: BLE001  (any hub/network error is worth a retry)
            if attempt == attempts:
                raise
            delay = first_delay * 2 ** (attempt - 1)
            print(f"attempt {attempt}/{attempts} failed ({err}); retrying in {delay:.0f}s", flush=True)
            sleep(delay)
    raise AssertionError("unreachable")


def download(model_id: str, revision: str, root: str | Path, *, resolve_commit: Callable[[], str],
             fetch: Callable[[Path], Any], sleep: Callable[[float], None] = time.sleep) -> dict:
    """Download unless already complete; return the marker. `resolve_commit()` names the commit
    the revision points at; `fetch(target)` downloads the snapshot into `target`."""
    target = model_path(root, model_id, revision)
    done = completed(target, model_id, revision)
    if done:
        print(f"{model_id}@{revision} already on the model store at {target} "
              f"(commit {done.get('commit')}); nothing to do", flush=True)
        return done
    target.mkdir(parents=True, exist_ok=True)
    commit = with_retries(resolve_commit, sleep=sleep)
    print(f"downloading {model_id}@{revision} (commit {commit}) to {target}", flush=True)
    with_retries(lambda: fetch(target), sleep=sleep)
    marker = {"model": model_id, "revision": revision, "commit": commit,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    partial = target / (MARKER + ".tmp")
    partial.write_text(json.dumps(marker, indent=2) + "\n")
    partial.replace(target / MARKER)  # the marker appears whole or not at all
    return marker


def read_token(env: Mapping[str, str]) -> str | None:
    """The HF token from the file the Job mounts (HF_TOKEN_FILE), or None: a public model
    needs none. Read only here, after every import."""
    path = env.get("HF_TOKEN_FILE")
    if not path:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise RuntimeError(f"{path} is empty: set the token with `pulumi config set --secret hfToken`")
    return token


def main() -> int:
    import huggingface_hub  # installed in the Job's container, not needed to import this module

    model_id, revision = os.environ["MODEL_ID"], os.environ["MODEL_REVISION"]
    token = read_token(os.environ)
    api = huggingface_hub.HfApi(token=token)
    download(
        model_id, revision, os.environ["MODEL_ROOT"],
        resolve_commit=lambda: api.model_info(model_id, revision=revision).sha,
        fetch=lambda target: huggingface_hub.snapshot_download(
            repo_id=model_id, revision=revision, local_dir=target, token=token),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

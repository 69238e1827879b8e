"""Build git repositories of known content in tests: every commit kind the pipeline must handle."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class GitRepo:
    """A working repository in a temporary folder, with helpers that return each new commit's SHA."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)
        self.git("config", "core.autocrlf", "false")
        self._tick = 0

    def git(self, *args: str, input: bytes | None = None) -> str:
        self._tick = getattr(self, "_tick", 0) + 1
        stamp = f"{1_700_000_000 + self._tick * 60} +0000"
        env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        env.update(getattr(self, "_author_env", {}))
        out = subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, env=env, input=input
        )
        return out.stdout.decode("utf-8", "replace").strip()

    def write(self, rel: str, content: str | bytes) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8", newline="")
        return target

    def commit(
        self,
        message: str | bytes,
        files: dict[str, str | bytes] | None = None,
        *,
        author: tuple[str, str] | None = None,
        allow_empty: bool = False,
        date: str | None = None,
    ) -> str:
        """``date``: git's date format ("2026-03-01T12:00:00Z"), for author and committer."""
        for rel, content in (files or {}).items():
            self.write(rel, content)
        self.git("add", "-A")
        self._author_env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1]} if author else {}
        if date:
            self._author_env |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        args = ["commit", "-q", "--no-verify", "-F", "-"] + (["--allow-empty"] if allow_empty else [])
        self.git(*args, input=message if isinstance(message, bytes) else message.encode())
        self._author_env = {}
        return self.head()

    def raw_commit(self, message: bytes, tz: str = "+0000", when: int | None = None) -> str:
        """A commit object written byte for byte (``git commit`` would refuse or re-encode it)."""
        self.git("add", "-A")
        tree = self.git("write-tree")
        stamp = f"{when or 1_700_000_000 + self._tick * 60} {tz}"
        body = (
            (
                f"tree {tree}\nparent {self.head()}\nauthor Test Author <author@example.com> {stamp}\n"
                f"committer Test Author <author@example.com> {stamp}\n\n"
            ).encode()
            + message
            + b"\n"
        )
        sha = self.git("hash-object", "-t", "commit", "-w", "--stdin", input=body)
        self.git("update-ref", "HEAD", sha)
        return sha

    def fast_import(self, count: int) -> None:
        """``count`` commits, each adding one small module, in one ``git fast-import`` (seconds -> ms)."""
        lines = []
        for i in range(count):
            body = f"VALUE_{i} = {i}\n".encode()
            msg = f"Add generated module number {i} to the package\n".encode()
            lines.append(b"commit refs/heads/main\n")
            lines.append(f"committer Test Author <author@example.com> {1_600_000_000 + i * 60} +0000\n".encode())
            lines.append(b"data %d\n%s" % (len(msg), msg))
            lines.append(b"M 100644 inline mods/m%05d.py\ndata %d\n%s\n" % (i, len(body), body))
        self.git("fast-import", "--quiet", input=b"".join(lines))
        self.git("reset", "-q", "--hard", "main")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

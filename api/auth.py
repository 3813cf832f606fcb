"""The write token: generated on first start, kept mode 0600 in the data directory, never a default.

Reads need no token; every write route depends on ``require_token``. The token file is published atomically
(written to a private temporary file, then hard-linked into place with O_EXCL semantics), so a crash or a
second process starting at the same moment can never leave an empty or half-written token behind.
"""
from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.store.durable import fsync_dir

TOKEN_FILE = "api-token"
_MIN_LEN = 32  # token_urlsafe(32) gives 43 characters; anything much shorter was not written by us


def ensure_token(data_dir: Path | str) -> tuple[str, bool]:
    """The API token for ``data_dir``, creating it on first use. Returns ``(token, created)``.

    Raises ValueError when an existing token file is unusable (readable by others, empty, malformed): the
    message says what to do, because silently replacing it would lock out every configured client.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    if path.exists():
        return _read(path), False
    token = secrets.token_urlsafe(32)
    tmp = data_dir / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and fails if it exists: like O_EXCL, but never exposes a partial file
        except FileExistsError:
            return _read(path), False  # another process won the race; its token is the token
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(data_dir)
    return token, True


def _read(path: Path) -> str:
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(f"API token {path} is not a regular file")
    if mode & 0o077:
        raise ValueError(f"API token {path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
                         "delete it and restart to generate a new one")
    token = path.read_text(encoding="ascii", errors="replace").strip()
    if len(token) < _MIN_LEN or not token.isprintable() or " " in token:
        raise ValueError(f"API token {path} is empty or malformed; delete it and restart to generate a new one")
    return token


_bearer = HTTPBearer(auto_error=False, description="The token from `<data_dir>/api-token`.")

UNAUTHORIZED = {401: {"description": "Missing or wrong `Authorization: Bearer <token>`",
                      "content": {"application/json": {"example": {"detail": "a valid bearer token is required"}}}}}


def require_token(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Dependency of every write route: 401 unless the bearer token matches, compared in constant time."""
    expected: str = request.app.state.token
    given = credentials.credentials if credentials is not None else ""
    if not given or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("ascii")):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


TokenDep = Depends(require_token)

"""The write token: created once, 0600, never a default, refused when unsafe, the same for racing starters."""
import os
import stat
import threading

import pytest

from api.auth import TOKEN_FILE, ensure_token


def test_created_once_with_mode_0600(tmp_path):
    token, created = ensure_token(tmp_path)
    assert created and len(token) >= 40
    path = tmp_path / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    again, created_again = ensure_token(tmp_path)
    assert again == token and created_again is False
    assert [p.name for p in tmp_path.iterdir()] == [TOKEN_FILE]  # no temporary file left behind


def test_every_data_dir_gets_its_own_token(tmp_path):
    a, _ = ensure_token(tmp_path / "a")
    b, _ = ensure_token(tmp_path / "b")
    assert a != b


def test_creates_the_data_dir(tmp_path):
    token, created = ensure_token(tmp_path / "new" / "dir")
    assert created and (tmp_path / "new" / "dir" / TOKEN_FILE).exists()


def test_racing_starters_agree_on_one_token(tmp_path):
    results, errors = [], []
    barrier = threading.Barrier(8)

    def start():
        barrier.wait()
        try:
            results.append(ensure_token(tmp_path))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({token for token, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_a_token_readable_by_others_is_refused(tmp_path):
    ensure_token(tmp_path)
    os.chmod(tmp_path / TOKEN_FILE, 0o644)
    with pytest.raises(ValueError, match="accessible by other users"):
        ensure_token(tmp_path)


@pytest.mark.parametrize("content", ["", "\n", "short", "has a space in the middle of it and is long enough"])
def test_an_empty_or_malformed_token_is_refused(tmp_path, content):
    path = tmp_path / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content.encode())
    os.close(fd)
    with pytest.raises(ValueError, match="empty or malformed"):
        ensure_token(tmp_path)


def test_a_directory_in_its_place_is_refused(tmp_path):
    (tmp_path / TOKEN_FILE).mkdir(mode=0o700)
    with pytest.raises(ValueError, match="not a regular file"):
        ensure_token(tmp_path)

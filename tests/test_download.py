"""`python download.py` against a fake Zenodo on 127.0.0.1: download, verify, resume,
unpack safely, and fail in one line. No test reaches the internet."""

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import data
import download
import synth
import unpack

ROOT = Path(__file__).resolve().parents[1]
RECORD = "2652278"
# No waiting between retries in tests.
FAST = ["--backoff", "0"]


class FakeZenodo:
    """A records API and file server. Per file: ``drop`` (bytes sent before the connection is
    cut, for the next ``drop_times`` requests), ``fail`` (HTTP statuses for the next requests),
    ``corrupt`` (serve the bytes with one flipped), ``ranges`` (honour Range, else send 200)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.listed: dict[str, bytes] = {}  # what the record's size and MD5 describe
        self.drop: dict[str, tuple[int, int]] = {}
        self.fail: dict[str, list[int]] = {}
        self.corrupt: set[str] = set()
        self.ranges = True
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range, status)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, body=b"", headers=()):
                server.requests.append((self.path, self.headers.get("Range"), status))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                m = re.fullmatch(r"/api/records/(\w+)", self.path)
                if m:
                    if m.group(1) != RECORD:
                        return self.send(404, b"{}")
                    return self.send(
                        200,
                        json.dumps(server.record()).encode(),
                        [("Content-Type", "application/json")],
                    )
                m = re.fullmatch(rf"/api/records/{RECORD}/files/([^/]+)/content", self.path)
                if not m or m.group(1) not in server.files:
                    return self.send(404, b"not found")
                key = m.group(1)
                if server.fail.get(key):
                    return self.send(server.fail[key].pop(0), b"busy")
                body = server.files[key]
                if key in server.corrupt:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                start, status, headers = 0, 200, []
                rng = self.headers.get("Range")
                if rng and server.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(body):
                        return self.send(416)
                    status = 206
                    headers.append(("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"))
                payload = body[start:]
                server.requests.append((self.path, rng, status))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut, times = server.drop.get(key, (0, 0))
                if times:
                    # Promise the whole body, send part of it, hang up.
                    server.drop[key] = (cut, times - 1)
                    self.wfile.write(payload[: max(cut - start, 0)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def add(self, key: str, content: bytes):
        self.files[key] = self.listed[key] = content

    def record(self):
        return {
            "id": int(RECORD),
            "files": [
                {
                    "key": k,
                    "size": len(v),
                    "checksum": "md5:" + hashlib.md5(v).hexdigest(),
                    "links": {"self": f"{self.url}/api/records/{RECORD}/files/{k}/content"},
                }
                for k, v in self.listed.items()
            ],
        }

    def file_requests(self, key=None):
        return [r for r in self.requests if "/files/" in r[0] and (key is None or key in r[0])]


@pytest.fixture
def zenodo():
    server = FakeZenodo()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def cells_src(tmp_path_factory) -> Path:
    """Two generated cells (S001, S002) in the real format."""
    out = tmp_path_factory.mktemp("src")
    synth.synthesize(out, n_cells=2, n_genes=6, seed=3)
    return out


def split_files(src: Path, cells=("S001", "S002")):
    return {
        f"{c}/classification/{s}.csv": (src / c / "classification" / f"{s}.csv").read_bytes()
        for c in cells
        for s in data.SPLITS
    }


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def run_download(server, data_dir, *extra):
    return download.main(["--data_dir", str(data_dir), "--zenodo_url", server.url, *FAST, *extra])


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "download.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def assert_one_line_error(res, *fragments):
    """Exit 2, no traceback, one error line (last), any other stderr lines retry warnings."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), res.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# The happy path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_download_verifies_unpacks_and_load_data_reads_it(zenodo, cells_src, tmp_path, kind):
    # The archive's own prefix (here two folders deep) must not matter, nor stray members.
    members = {f"release/v1/{k}": v for k, v in split_files(cells_src).items()}
    members["release/v1/README.txt"] = b"about"
    blob = make_zip(members) if kind == "zip" else make_tar(members)
    zenodo.add(f"data.{kind}", blob)
    out = tmp_path / "data"
    assert run_download(zenodo, out) == 0

    assert data.list_cells(out) == ["S001", "S002"]
    for name, content in split_files(cells_src).items():
        assert (out / name).read_bytes() == content
    (x_train, y_train), _, (x_test, _) = data.load_data(out / "S001")
    assert x_train.shape == (6, 505, 1) and x_train.dtype == np.float32
    assert y_train.shape == (6, 2)
    kept = out / download.DOWNLOAD_DIR / f"data.{kind}"
    assert hashlib.md5(kept.read_bytes()).digest() == hashlib.md5(blob).digest()
    assert not list(out.glob(".unpack-*")) and not list(kept.parent.glob("*.part"))
    assert not (out / "README.txt").exists() and not (out / "release").exists()

    # Run again: the verified file is not fetched again and nothing is unpacked again.
    n_file_requests = len(zenodo.file_requests())
    mtime = (out / "S001/classification/train.csv").stat().st_mtime_ns
    assert run_download(zenodo, out) == 0
    assert len(zenodo.file_requests()) == n_file_requests
    assert (out / "S001/classification/train.csv").stat().st_mtime_ns == mtime


def test_cli_uses_zenodo_url_from_environment(zenodo, cells_src, tmp_path):
    zenodo.add("data.zip", make_zip(split_files(cells_src)))
    res = run_cli("--data_dir", str(tmp_path / "d"), *FAST, env={"ZENODO_URL": zenodo.url})
    assert res.returncode == 0, res.stderr
    assert "2 cells ready" in res.stdout and "S001, S002" in res.stdout
    assert data.list_cells(tmp_path / "d") == ["S001", "S002"]


def test_list_only_prints_the_files_and_downloads_nothing(zenodo, tmp_path, capsys):
    zenodo.add("data.zip", b"x" * 2500)
    assert run_download(zenodo, tmp_path / "d", "--list") == 0
    assert "data.zip (2.5 kB)" in capsys.readouterr().out
    assert not zenodo.file_requests() and not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# Resume, retries, verification


def test_dropped_connection_resumes_with_a_range_request_on_the_next_run(
    zenodo, cells_src, tmp_path
):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    half = len(blob) // 2
    zenodo.drop["data.zip"] = (half, 1)
    out = tmp_path / "data"
    with pytest.raises(download.DownloadError, match=r"connection closed after .* bytes.*again"):
        run_download(zenodo, out, "--retries", "0")
    parts = list((out / download.DOWNLOAD_DIR).glob("data.zip.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == half
    assert not (out / "S001").exists()

    assert run_download(zenodo, out, "--retries", "0") == 0
    path, rng, status = zenodo.file_requests()[-1]
    assert (rng, status) == (f"bytes={half}-", 206)
    final = out / download.DOWNLOAD_DIR / "data.zip"
    assert hashlib.md5(final.read_bytes()).hexdigest() == hashlib.md5(blob).hexdigest()
    assert data.list_cells(out) == ["S001", "S002"]


def test_dropped_connection_and_5xx_are_retried_within_one_run(zenodo, cells_src, tmp_path):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    zenodo.fail["data.zip"] = [503, 502]
    zenodo.drop["data.zip"] = (len(blob) // 3, 2)
    out = tmp_path / "data"
    assert run_download(zenodo, out, "--retries", "4") == 0
    statuses = [(rng, status) for _, rng, status in zenodo.file_requests()]
    assert statuses[:3] == [(None, 503), (None, 502), (None, 200)]
    # The second drop happens on the first resume, at the same offset: no bytes gained.
    assert statuses[3:] == [(f"bytes={len(blob) // 3}-", 206)] * 2
    assert data.list_cells(out) == ["S001", "S002"]


def test_server_that_ignores_range_restarts_from_zero(zenodo, cells_src, tmp_path):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    zenodo.ranges = False
    zenodo.drop["data.zip"] = (len(blob) // 2, 1)
    out = tmp_path / "data"
    assert run_download(zenodo, out, "--retries", "1") == 0
    assert [s for _, _, s in zenodo.file_requests()] == [200, 200]
    assert (out / download.DOWNLOAD_DIR / "data.zip").read_bytes() == blob


def test_wrong_md5_is_removed_and_reported_then_a_good_server_succeeds(zenodo, cells_src, tmp_path):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    zenodo.corrupt.add("data.zip")
    out = tmp_path / "data"
    res = run_cli("--data_dir", str(out), "--zenodo_url", zenodo.url, *FAST)
    line = assert_one_line_error(res, "data.zip", "MD5", "removed", "again")
    assert hashlib.md5(blob).hexdigest() in line
    assert not [p for p in (out / download.DOWNLOAD_DIR).iterdir() if p.name.startswith("data.zip")]
    assert not (out / "S001").exists()

    zenodo.corrupt.clear()
    assert run_download(zenodo, out) == 0
    assert data.list_cells(out) == ["S001", "S002"]


def test_a_finished_file_damaged_on_disk_is_fetched_again(zenodo, cells_src, tmp_path, capsys):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    out = tmp_path / "data"
    assert run_download(zenodo, out) == 0
    kept = out / download.DOWNLOAD_DIR / "data.zip"
    kept.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    assert run_download(zenodo, out) == 0
    assert "removed, downloading it again" in capsys.readouterr().err
    assert kept.read_bytes() == blob


def test_a_206_for_another_range_is_not_appended(zenodo, cells_src, tmp_path, monkeypatch):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    folder = tmp_path / "data" / download.DOWNLOAD_DIR
    folder.mkdir(parents=True)
    md5 = hashlib.md5(blob).hexdigest()
    (folder / f"data.zip.{md5[:8]}.part").write_bytes(blob[:100])
    # The server answers "bytes=100-" with the bytes from 50 on: neither appending them nor
    # taking them for the whole file gives the right file.
    real = download._open
    monkeypatch.setattr(
        download,
        "_open",
        lambda url, headers=None: real(url, {"Range": "bytes=50-"} if headers else None),
    )
    assert run_download(zenodo, tmp_path / "data", "--retries", "1") == 0
    assert (folder / "data.zip").read_bytes() == blob


def test_bad_addresses_are_one_line_errors(tmp_path):
    for args, fragment in (
        (["--zenodo_url", "zenodo.org"], "expected an http(s) address"),
        (["--zenodo_url", "http://127.0.0.1:99999"], "expected an http(s)"),
        (["--record", "../x"], "expected a record id"),
    ):
        res = run_cli("--data_dir", str(tmp_path / "d"), *args, *FAST)
        assert_one_line_error(res, fragment)
    assert not (tmp_path / "d").exists()


def test_a_part_of_another_version_is_not_continued(zenodo, cells_src, tmp_path):
    blob = make_zip(split_files(cells_src))
    zenodo.add("data.zip", blob)
    folder = tmp_path / "data" / download.DOWNLOAD_DIR
    folder.mkdir(parents=True)
    (folder / "data.zip.00000000.part").write_bytes(b"old version")
    assert run_download(zenodo, tmp_path / "data") == 0
    assert [rng for _, rng, _ in zenodo.file_requests()] == [None]
    assert not list(folder.glob("*.part"))


# ---------------------------------------------------------------------------------------------
# Network and server errors: one line, exit status 2, completed files intact


def test_record_404_is_a_one_line_error(zenodo, tmp_path):
    res = run_cli(
        "--data_dir", str(tmp_path / "d"), "--zenodo_url", zenodo.url, "--record", "999", *FAST
    )
    assert_one_line_error(res, "/api/records/999", "HTTP 404", "--record")
    assert len(res.stderr.strip().splitlines()) == 1  # a 404 is not retried


def test_file_404_keeps_the_completed_files(zenodo, cells_src, tmp_path):
    zenodo.add("a.zip", make_zip(split_files(cells_src, ["S001"])))
    zenodo.add("b.zip", make_zip(split_files(cells_src, ["S002"])))
    out = tmp_path / "d"
    del zenodo.files["b.zip"]  # listed in the record, gone from the server
    res = run_cli("--data_dir", str(out), "--zenodo_url", zenodo.url, *FAST)
    assert_one_line_error(res, "b.zip", "HTTP 404", "again")
    assert (out / download.DOWNLOAD_DIR / "a.zip").read_bytes() == zenodo.listed["a.zip"]


def test_refused_connection_is_retried_then_a_one_line_error(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli(
        "--data_dir",
        str(tmp_path / "d"),
        "--zenodo_url",
        f"http://127.0.0.1:{port}",
        "--retries",
        "2",
        *FAST,
    )
    assert_one_line_error(
        res, f"127.0.0.1:{port}", "connection refused", "3 attempts", "run the same command again"
    )
    assert res.stderr.count("warning: ") == 2


def test_persistent_5xx_gives_up_after_the_retries(zenodo, cells_src, tmp_path):
    zenodo.add("data.zip", make_zip(split_files(cells_src)))
    zenodo.fail["data.zip"] = [500] * 10
    res = run_cli(
        "--data_dir", str(tmp_path / "d"), "--zenodo_url", zenodo.url, "--retries", "1", *FAST
    )
    assert_one_line_error(res, "data.zip", "HTTP 500", "2 attempts", "again")


# ---------------------------------------------------------------------------------------------
# Unpacking: layouts, --cells, existing files


def test_per_cell_archives_with_cells_downloads_only_those(zenodo, cells_src, tmp_path):
    # Per-cell archives whose members start at classification/ or at the split files.
    s1 = split_files(cells_src, ["S001"])
    s2 = split_files(cells_src, ["S002"])
    zenodo.add("S001.zip", make_zip({k.split("/", 1)[1]: v for k, v in s1.items()}))
    zenodo.add("S002.tar.gz", make_tar({k.rsplit("/", 1)[1]: v for k, v in s2.items()}))
    out = tmp_path / "d"
    assert run_download(zenodo, out, "--cells", "S002") == 0
    assert [p for p, _, _ in zenodo.file_requests()] == [
        f"/api/records/{RECORD}/files/S002.tar.gz/content"
    ]
    assert data.list_cells(out) == ["S002"]
    assert (out / "S002/classification/test.csv").read_bytes() == s2["S002/classification/test.csv"]

    with pytest.raises(data.DataError, match="no file for cell.*S009"):
        run_download(zenodo, out, "--cells", "S001,S009")


def test_cells_from_one_big_archive_unpacks_only_those(zenodo, cells_src, tmp_path):
    zenodo.add("data.tar.gz", make_tar({f"data/{k}": v for k, v in split_files(cells_src).items()}))
    out = tmp_path / "d"
    assert run_download(zenodo, out, "--cells", "S002") == 0
    assert data.list_cells(out) == ["S002"]
    # The other cell later: the archive is not fetched again, only unpacked.
    assert run_download(zenodo, out, "--cells", "S001") == 0
    assert data.list_cells(out) == ["S001", "S002"]
    assert len(zenodo.file_requests()) == 1
    with pytest.raises(data.DataError, match=r"S777 not in record .*holds 2: S001, S002"):
        run_download(zenodo, out, "--cells", "S777")


def test_existing_files_are_never_overwritten_and_missing_splits_are_added(
    zenodo, cells_src, tmp_path
):
    zenodo.add("data.zip", make_zip(split_files(cells_src)))
    out = tmp_path / "d"
    mine = out / "S001" / "classification" / "train.csv"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own file")
    assert run_download(zenodo, out) == 0
    assert mine.read_bytes() == b"my own file"
    assert (out / "S001/classification/valid.csv").read_bytes() == split_files(cells_src)[
        "S001/classification/valid.csv"
    ]


def test_incomplete_cell_is_not_unpacked(zenodo, cells_src, tmp_path, capsys):
    members = split_files(cells_src)
    del members["S002/classification/valid.csv"]
    zenodo.add("data.zip", make_zip(members))
    out = tmp_path / "d"
    assert run_download(zenodo, out) == 0
    assert data.list_cells(out) == ["S001"] and not (out / "S002").exists()
    assert "S002 lacks valid.csv" in capsys.readouterr().err


def test_archive_without_the_layout_says_where_the_files_are(zenodo, tmp_path):
    zenodo.add("other.zip", make_zip({"x/y.csv": b"1,2\n"}))
    with pytest.raises(data.DataError, match=r"no <cell>/classification.*\.download"):
        run_download(zenodo, tmp_path / "d")


# ---------------------------------------------------------------------------------------------
# Unsafe archives are refused; nothing lands outside data_dir (nor inside)


def unsafe_archives(tmp_path: Path, cells_src: Path):
    """(archive bytes, kind, the path outside data_dir it aims at) for each attack."""
    good = split_files(cells_src, ["S001"])
    outside = tmp_path / "outside" / "evil.csv"
    return {
        "zip ..": (make_zip({**good, "../outside/evil.csv": b"x"}), "zip"),
        "zip absolute": (make_zip({**good, str(outside): b"x"}), "zip"),
        "zip backslash ..": (make_zip({**good, "..\\outside\\evil.csv": b"x"}), "zip"),
        "tar ..": (make_tar({**good, "data/../../outside/evil.csv": b"x"}), "tar.gz"),
        "tar absolute": (make_tar({**good, str(outside): b"x"}), "tar.gz"),
        "tar symlink": (make_tar(good, links={"S001/classification/link": str(outside)}), "tar.gz"),
    }, outside


@pytest.mark.parametrize(
    "attack",
    ["zip ..", "zip absolute", "zip backslash ..", "tar ..", "tar absolute", "tar symlink"],
)
def test_unsafe_member_refuses_the_whole_archive(tmp_path, cells_src, attack):
    archives, outside = unsafe_archives(tmp_path, cells_src)
    blob, kind = archives[attack]
    out = tmp_path / "data"
    out.mkdir()
    path = tmp_path / f"bad.{kind}"
    path.write_bytes(blob)
    with pytest.raises(data.DataError, match=r"refused: member .* nothing was unpacked"):
        unpack.unpack(path, out)
    assert not outside.parent.exists()
    assert sorted(p.name for p in out.iterdir()) == []  # no cell, no temporary folder


def test_unsafe_archive_through_the_command_is_a_one_line_error(zenodo, cells_src, tmp_path):
    archives, outside = unsafe_archives(tmp_path, cells_src)
    zenodo.add("data.zip", archives["zip .."][0])
    out = tmp_path / "data"
    res = run_cli("--data_dir", str(out), "--zenodo_url", zenodo.url, *FAST)
    assert_one_line_error(res, "data.zip", "refused", "'../outside/evil.csv'")
    assert not outside.parent.exists() and not (out / "S001").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("S001/classification/train.csv")
        info.create_system = 3
        info.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    path = tmp_path / "link.zip"
    path.write_bytes(buf.getvalue())
    (tmp_path / "d").mkdir()
    with pytest.raises(data.DataError, match="symbolic link"):
        unpack.unpack(path, tmp_path / "d")
    assert not (tmp_path / "d" / "S001").exists()


# ---------------------------------------------------------------------------------------------
# main.py points to the command


def test_main_names_the_download_command_when_data_is_missing(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--data_dir", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 2
    assert f"python download.py --data_dir {tmp_path / 'nothing'}" in res.stderr

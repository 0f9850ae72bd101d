"""``python -m udphub`` against a real hub: output, exit codes, clear errors."""

import socket
import subprocess
import sys

from conftest import sized_jpeg


def cli(*args):
    return subprocess.run([sys.executable, "-m", "udphub", *args], capture_output=True,
                          text=True, timeout=60)


def test_send_files_several_times(hub, tmp_path):
    files = []
    for i, n in enumerate([5000, 66_000]):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(sized_jpeg(n, seed=i))
    run = cli("send", "--jpeg", *map(str, files), "--hub", hub.img, "--count", "2")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(": delivered in ") == 4, run.stdout
    assert "4 of 4 frames delivered" in run.stdout
    assert hub.wait_saved(4) == sorted([f.read_bytes() for f in files] * 2)


def test_send_over_tcp_and_chunked(hub, tmp_path):
    f = tmp_path / "a.jpg"
    f.write_bytes(sized_jpeg(30_000))
    assert cli("send", "--jpeg", str(f), "--hub", hub.tcp, "--protocol", "tcp").returncode == 0
    run = cli("send", "--jpeg", str(f), "--hub", hub.img, "--protocol", "chunked")
    assert run.returncode == 0 and "1 of 1 frames delivered" in run.stdout, run
    assert hub.wait_saved(2) == [f.read_bytes()] * 2


def test_a_lost_frame_exits_1(tmp_path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    f = tmp_path / "a.jpg"
    f.write_bytes(sized_jpeg(5000))
    run = cli("send", "--jpeg", str(f), "--hub", "127.0.0.1:%d" % s.getsockname()[1],
              "--timeout", "0.2")
    s.close()
    assert run.returncode == 1
    assert ": lost (" in run.stdout and "0 of 1 frames delivered" in run.stdout, run.stdout


def test_bad_arguments_exit_2_with_a_reason(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    cases = [
        (["send", "--jpeg", str(text), "--hub", "127.0.0.1:9"], "not a complete JPEG"),
        (["send", "--jpeg", str(tmp_path / "missing.jpg"), "--hub", "127.0.0.1:9"], "cannot read"),
        (["send", "--jpeg", str(text), "--hub", "127.0.0.1:9", "--protocol", "udp"], "invalid choice"),
        (["send", "--jpeg", str(text), "--hub", "127.0.0.1:9", "--count", "0"], "--count"),
        (["send", "--jpeg", str(text), "--hub", "127.0.0.1:x"], "not a number"),
        (["send", "--jpeg", str(text), "--hub", "127.0.0.1:9", "--timeout", "0"], "above 0"),
        (["msg", "--hub", "127.0.0.1:9", "[0, 0,"], "not one JSON value"),
        (["send", "--hub", "127.0.0.1:9"], "--jpeg"),
    ]
    for args, words in cases:
        run = cli(*args)
        assert run.returncode == 2, (args, run)
        assert words in run.stderr, (args, run.stderr)


def test_msg(hub):
    run = cli("msg", "--hub", hub.msg, '{"temp": 21.5}')
    assert run.returncode == 0 and run.stdout.startswith("get the msg"), run
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    run = cli("msg", "--hub", "127.0.0.1:%d" % s.getsockname()[1], "[1]", "--timeout", "0.2")
    s.close()
    assert run.returncode == 1 and "no answer" in run.stderr, run

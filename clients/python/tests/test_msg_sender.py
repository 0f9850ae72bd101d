"""MsgSender against a real hub's message port."""

import json
import socket

import pytest

import udphub


def log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_messages_are_answered_and_logged(start_hub, tmp_path):
    log = tmp_path / "msgs.jsonl"
    hub = start_hub("--msg-log", str(log))
    with udphub.MsgSender(hub.msg) as msgs:
        first = msgs.send([0, 0, 0, 1])
        second = msgs.send({"temp": 21.5, "name": "pi-1"})
        exact = msgs.send_json('[123456789012345678901234567890, 0.1000000000000000055511151231257827]')
    assert first.attempts == 1 and first.size == len(b"[0, 0, 0, 1]") and first.delivered
    assert second.rtt >= 0 and exact.attempts == 1
    # the hub writes the line before it answers: it is there once send() returned
    assert [line["msg"] for line in log_lines(log)][:2] == [[0, 0, 0, 1], {"temp": 21.5, "name": "pi-1"}]
    assert "123456789012345678901234567890, 0.1000000000000000055511151231257827" in log.read_text()
    assert "3 messages" in hub.stop()


def test_a_message_the_hub_cannot_record_raises(start_hub):
    hub = start_hub("--msg-log", "/dev/full")  # every write fails: no space left on device
    with udphub.MsgSender(hub.msg) as msgs:
        with pytest.raises(udphub.NotRecorded, match="could not record") as info:
            msgs.send([1])
    assert info.value.reply == "error: the hub could not record the message"
    assert isinstance(info.value, udphub.HubError)


def test_no_answer_raises_message_lost():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never read
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    with udphub.MsgSender(s.getsockname(), timeout=0.2, retries=1) as msgs:
        with pytest.raises(udphub.MessageLost, match="2 sends") as info:
            msgs.send([1])
    assert isinstance(info.value, TimeoutError)
    assert len(s.recv(100)) == 3  # it did send, twice
    assert s.recv(100) == b"[1]"
    s.close()


def test_bad_values_are_refused_before_sending(hub):
    with udphub.MsgSender(hub.msg) as msgs:
        with pytest.raises(ValueError, match="as JSON"):
            msgs.send(float("nan"))
        with pytest.raises(TypeError, match="as JSON"):
            msgs.send({1, 2})
        with pytest.raises(ValueError, match="does not fit in one UDP datagram"):
            msgs.send("x" * 70_000)
        with pytest.raises(ValueError, match="not one JSON value"):
            msgs.send_json("[0, 0,")
        assert msgs.send([0]).delivered  # still fine after refusals
    with pytest.raises(ValueError, match="retries must be in 0..100"):
        udphub.MsgSender(hub.msg, retries=-1)
    summary = hub.stop()
    assert "1 messages" in summary and "0 invalid" in summary, summary


def test_framed_messages_through_loss_are_logged_exactly_once_under_the_name(
        start_hub, relay, tmp_path):
    log = tmp_path / "msgs.jsonl"
    hub = start_hub("--msg-log", str(log))
    lossy = relay(hub.msg, "--loss", "0.3", "--seed", "7")  # both ways: replies are lost too
    with udphub.MsgSender(lossy.addr, protocol="framed", name="rover-1", timeout=0.2,
                          retries=20) as msgs:
        results = [msgs.send({"n": i}) for i in range(60)]
    assert any(r.attempts > 1 for r in results), "the relay lost nothing: not a test of resends"
    lines = log_lines(log)
    assert [line["msg"]["n"] for line in lines] == list(range(60))  # once each, in order
    assert {line["name"] for line in lines} == {"rover-1"}


def test_framed_sender_checks_its_arguments():
    with pytest.raises(ValueError, match="protocol"):
        udphub.MsgSender("127.0.0.1:9", protocol="tcp")
    with pytest.raises(ValueError, match="name"):
        udphub.MsgSender("127.0.0.1:9", protocol="framed", name="no spaces")
    with pytest.raises(ValueError, match="on_command needs protocol='framed'"):
        udphub.MsgSender("127.0.0.1:9", on_command=print)
    with udphub.MsgSender("127.0.0.1:9", protocol="framed") as msgs:
        assert udphub.msg.host_name() == msgs.name



def test_a_command_reaches_the_python_sender_once(start_hub):
    import urllib.request

    hub = start_hub("--http", "127.0.0.1:0", "--command-ttl", "5")
    got = []
    with udphub.MsgSender(hub.msg, protocol="framed", name="arm-2",
                          on_command=lambda value, cid: got.append((value, cid))) as msgs:
        msgs.send({"hello": True})  # the hub now knows arm-2
        req = urllib.request.Request(f"{hub.addr['http']}/api/sources/arm-2/command",
                                     data=b'{"move": [1, 2]}', method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as answer:
            assert answer.status == 202
            command_id = json.loads(answer.read())["id"]
        for i in range(50):  # a bounded number of messages, each one round trip
            msgs.send({"i": i})
            if got:
                break
        for i in range(5):  # the ack went with the next message: never delivered twice
            msgs.send({"after": i})
    assert got == [({"move": [1, 2]}, command_id)]


def test_a_command_longer_than_the_messages_reaches_the_python_sender(start_hub):
    import urllib.request

    hub = start_hub("--http", "127.0.0.1:0")
    got = []
    big = {"path": "x" * 600}  # far longer than the 1-byte messages below
    with udphub.MsgSender(hub.msg, protocol="framed", name="arm-3",
                          on_command=lambda value, cid: got.append(value)) as msgs:
        msgs.send(1)
        req = urllib.request.Request(f"{hub.addr['http']}/api/sources/arm-3/command",
                                     data=json.dumps(big).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as answer:
            assert answer.status == 202
        for _ in range(50):  # the hub says how long a message must be; the next is padded
            msgs.send(1)
            if got:
                break
    assert got == [big]


def test_a_command_in_a_reply_to_another_message_is_not_taken():
    from udphub import wire

    hub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a stand-in hub
    hub.bind(("127.0.0.1", 0))
    hub.settimeout(5)
    got = []
    with udphub.MsgSender(hub.getsockname(), protocol="framed", name="cam",
                          on_command=lambda v, cid: got.append(v)) as msgs:
        def answer():
            data, peer = hub.recvfrom(65536)
            _, _, _, flags, run, seq, _ = wire.MSG_HEADER.unpack_from(data)
            assert flags & wire.MSG_COMMANDS
            command = wire.MSG_COMMAND.pack(7) + b'{"forged": true}'
            # a reply with a command naming another run, then the real, plain reply
            hub.sendto(wire.MSG_REPLY.pack(wire.MSG_MAGIC, 1, 1, 0, wire.REPLY_COMMAND,
                                           run ^ 1, seq) + command, peer)
            hub.sendto(wire.MSG_REPLY.pack(wire.MSG_MAGIC, 1, 1, 0, 0, run, seq), peer)

        import threading
        t = threading.Thread(target=answer)
        t.start()
        assert msgs.send({"n": 1}).delivered
        t.join(5)
    assert got == []
    hub.close()

"""The gossip core over a real MQTT 5 broker (mosquitto, its own process per test).

Real agents (LMDB stores, the asyncio API) with ``Agent(broker=...)``: convergence through the
broker, catching up after being offline, the Last Will clearing a SIGKILLed agent's presence,
garbage from another client counted and never applied, a broker refusing our login (a clear
error, then backoff logged once), and topic escaping on its own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from crdtsync.transports._mqtt_topics import (
    acks_topic,
    inbox_topic,
    level_name,
    parse_broker,
    parse_inbox_topic,
    parse_presence_topic,
    presence_topic,
    shard_topic,
    topic_level,
)
from mqttbroker import MOSQUITTO, Mosquitto

from crdtsync import Agent
from crdtsync.errors import BrokerRefused, InsecureBroker, UsageError

aiomqtt = pytest.importorskip("aiomqtt")
needs_broker = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install -y mosquitto)"
)


@pytest.fixture
def broker(tmp_path: Path) -> Mosquitto:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


async def eventually(
    check: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def agent(tmp_path: Path, broker: Mosquitto, name: str, **kw: object) -> Agent:
    return Agent(
        name, data_dir=tmp_path / name, broker=broker.url, mesh="m1", seed=hash(name) & 0xFFFF, **kw
    )


# -- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["plain", "a/b", "+", "#", "a+b#c", "$SYS", "100%", "%2F", "x:y", "sp ace", "é", "a/+/#"],
)
def test_a_name_is_exactly_one_escaped_topic_level(name: str) -> None:
    level = topic_level(name)
    assert not set(level) & set("/+#$ ")
    assert level_name(level) == name
    topic = inbox_topic("crdtsync", name, name, name)
    assert topic.count("/") == 4  # prefix/mesh/inbox/to/from, whatever the names hold
    assert parse_inbox_topic("crdtsync", name, name, topic) == name
    assert parse_presence_topic("crdtsync", name, presence_topic("crdtsync", name, name)) == name


def test_escaping_is_injective_and_strict() -> None:
    names = ["a/b", "a%2Fb", "a_b", "a-b", "a.b", "a:b", "a%3Ab"]
    assert len({topic_level(n) for n in names}) == len(names)
    for bad in ["a%2fb", "a/b", "a+b", "", "%zz", "%ff"]:  # not what topic_level would write
        with pytest.raises(ValueError):
            level_name(bad)
    assert parse_inbox_topic("p", "m", "me", "p/m/inbox/me/x/y") is None  # a level too many
    assert parse_presence_topic("p", "m", "p/other/presence/x") is None


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize(
    "props", [b"", b"\x01\x01", b"\x23\x00\x07" + b"\x26\x00\x01k\x00\x01v" * 20]
)
@pytest.mark.parametrize("topic", ["crdtsync/m/shard/s/a", "é/x", ""])
def test_the_fast_publish_reader_agrees_with_paho(qos: int, props: bytes, topic: str) -> None:
    """transports/_mqtt_fastpath.parse_publish reads what paho's own decoder reads (topic,
    payload, packet id) or declines (None: paho's code takes the packet), never differs."""
    from crdtsync.transports._mqtt_fastpath import parse_publish
    from paho.mqtt._packet import decode_publish
    from paho.mqtt.enums import MQTTProtocolVersion

    payload = b"\x00payload\xff" * 3
    t = topic.encode()
    length = len(props)
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    body = len(t).to_bytes(2, "big") + t
    if qos:
        body += (4242).to_bytes(2, "big")
    body += bytes(varint) + props + payload
    header = 0x30 | (qos << 1)
    mine = parse_publish(header, body)
    if qos == 2 or not topic:
        assert mine is None
        return
    theirs = decode_publish(header, body, MQTTProtocolVersion.MQTTv5)
    assert mine == (theirs.topic.decode(), bytes(theirs.payload), qos, theirs.mid)
    for cut in range(len(body) - len(payload)):  # truncated: declined, never misread
        assert parse_publish(header, body[:cut]) is None


def _publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 5 PUBLISH at QoS 0 with no properties, as a broker sends it."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + b"\x00" + payload
    n, remaining = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        remaining.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30]) + bytes(remaining) + body


def test_the_buffered_reader_hands_over_every_packet_of_a_chunk() -> None:
    """transports/_mqtt_fastpath.read_buffered: one socket read brings several packets and the
    start of another; every complete one is delivered at once (epoll would not wake us for
    bytes already read), the partial one when its rest comes, one larger than a read too."""
    import socket
    from types import SimpleNamespace

    from crdtsync.transports._mqtt_fastpath import READ_SIZE, deliver_directly, read_buffered
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    paho = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    paho._sock = ours
    got: list[tuple[str, bytes]] = []
    wrapper = SimpleNamespace(_client=paho)
    assert read_buffered(wrapper)
    assert deliver_directly(wrapper, lambda t, p: got.append((t, p)), lambda _k: None)
    packets = [_publish_packet(f"t/{i}", bytes([i]) * (i * 37)) for i in range(1, 9)]
    try:
        theirs.sendall(b"".join(packets[:7]) + packets[7][:3])
        assert paho.loop_read() == 0
        assert got == [(f"t/{i}", bytes([i]) * (i * 37)) for i in range(1, 8)]
        theirs.sendall(packets[7][3:])
        assert paho.loop_read() == 0
        assert got[-1] == ("t/8", bytes([8]) * 8 * 37) and len(got) == 8
        assert paho.loop_read() == 0 and len(got) == 8  # nothing more to read: no error
        big = _publish_packet("t/big", b"x" * (3 * READ_SIZE))
        theirs.setblocking(False)
        sent = 0
        while len(got) < 9:  # arrives over several reads (and socket buffers)
            if sent < len(big):
                try:
                    sent += theirs.send(big[sent:])
                except BlockingIOError:
                    pass
            assert paho.loop_read() == 0
        assert got[-1] == ("t/big", b"x" * (3 * READ_SIZE))
    finally:
        ours.close()
        theirs.close()


def test_the_buffered_reader_frames_publishes_itself_and_leaves_the_rest_to_paho() -> None:
    """With deliver_directly too, the complete PUBLISH packets of a read are framed by the
    reader (paho's per-packet state machine skipped), in order with the packets paho still
    frames (a PINGRESP, a QoS 2 PUBLISH, one split over two reads); a QoS 1 one is acked."""
    import socket
    from types import SimpleNamespace

    from crdtsync.transports._mqtt_fastpath import deliver_directly, read_buffered
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    paho = Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    paho._sock = ours
    got: list[tuple[str, bytes]] = []
    wrapper = SimpleNamespace(_client=paho)
    assert read_buffered(wrapper)
    assert deliver_directly(wrapper, lambda t, p: got.append((t, p)), lambda _k: None)
    reader = paho._crdtsync_reader
    framed = 0
    real = reader._publishes

    def counting() -> object:
        nonlocal framed
        before = len(got)
        rc = real()
        framed += len(got) - before
        return rc

    reader._publishes = counting
    pingresp = bytes([0xD0, 0x00])
    qos1 = bytearray(_publish_packet("t/q1", b"one"))
    # QoS 1: flags 0b0010 and a packet id (7) after the topic; one more byte of length
    qos1[0] = 0x32
    qos1[1] += 2
    at = 2 + 2 + len("t/q1")
    qos1[at:at] = (7).to_bytes(2, "big")
    qos2 = bytearray(qos1)
    qos2[0] = 0x34  # QoS 2: paho's own decoding (it then answers a PUBREC)
    packets = [
        _publish_packet("t/1", b"a"),
        _publish_packet("t/2", b"b" * 100),
        pingresp,
        _publish_packet("t/3", b"c"),
        bytes(qos1),
        bytes(qos2),
        _publish_packet("t/4", b"d" * 50),
    ]
    last = _publish_packet("t/5", b"e" * 40)
    try:
        theirs.sendall(b"".join(packets) + last[:5])
        assert paho.loop_read() == 0
        assert got == [
            ("t/1", b"a"),
            ("t/2", b"b" * 100),
            ("t/3", b"c"),
            ("t/q1", b"one"),  # (the QoS 2 one waits in paho for the broker's PUBREL)
            ("t/4", b"d" * 50),
        ]
        # every QoS 0/1 one by the reader, the first of the read too (read ahead of paho)
        assert framed == 5
        paho.loop_write()
        theirs.setblocking(False)
        answers = theirs.recv(1024)
        assert b"\x40\x02\x00\x07" in answers  # the PUBACK of the QoS 1 one, by the reader
        assert b"\x50\x02\x00\x07" in answers  # the PUBREC of the QoS 2 one, by paho
        theirs.setblocking(True)
        theirs.sendall(last[5:])
        assert paho.loop_read() == 0
        assert got[-1] == ("t/5", b"e" * 40) and len(got) == 6
        theirs.sendall(_publish_packet("t/6", b"f"))
        theirs.close()  # a last packet, then the end of the stream: read ahead, paho's next
        assert paho.loop_read() == 0 and got[-1] == ("t/6", b"f")
        assert paho.loop_read() != 0  # the connection is lost, as paho's own read says
    finally:
        ours.close()
        theirs.close()


def test_broker_urls_and_the_insecure_refusal() -> None:
    cfg = parse_broker("mqtt://127.0.0.1:1884/team/a")
    assert (cfg.host, cfg.port, cfg.tls, cfg.prefix) == ("127.0.0.1", 1884, False, "team/a")
    assert parse_broker("mqtts://u:p%40ss@broker.example").password == "p@ss"
    assert parse_broker("mqtts://u:p@broker.example").port == 8883
    for insecure_url in ["mqtt://broker.example", "mqtts://broker.example", "mqtt://u:p@10.0.0.1"]:
        with pytest.raises(InsecureBroker, match="insecure=True"):
            parse_broker(insecure_url)
        assert parse_broker(insecure_url, insecure=True).host
    for bad in [
        "ws://127.0.0.1",
        "mqtt://127.0.0.1/a/+",
        "mqtt://127.0.0.1/$SYS",
        "mqtt://127.0.0.1?x=1",
    ]:
        with pytest.raises(UsageError):
            parse_broker(bad)
    with pytest.raises(InsecureBroker):
        Agent("a", broker="mqtt://u:p@broker.example")  # refused before any store is opened
    with pytest.raises(UsageError, match="transport"):
        Agent("a", broker="mqtt://127.0.0.1", transport=lambda *a, **k: None)  # type: ignore[arg-type,return-value]


# -- with a broker --------------------------------------------------------------------------


@needs_broker
async def test_agents_converge_through_the_broker(tmp_path: Path, broker: Mosquitto) -> None:
    # names that need escaping in a topic level
    agents = [agent(tmp_path, broker, n) for n in ("a/1", "b:x", "c.d/e")]
    for a in agents:
        await a.start()
    try:
        shards = [await a.shard("board") for a in agents]
        for i, s in enumerate(shards):
            for k in range(20):
                s[f"{i}-{k}"] = k
        await eventually(lambda: all(len(s) == 60 for s in shards), what="convergence")
        await eventually(lambda: len({s.digest() for s in shards}) == 1, what="equal digests")
        shards[0]["acked"] = True
        await shards[0].replicated(peers=2, timeout=10)  # acks come back through the broker
        assert all(set(a.core.connected()) == {b.name for b in agents} - {a.name} for a in agents)
        assert all(a.address == f"mqtt:{a.name}" for a in agents)
    finally:
        for a in agents:
            await a.close()


@needs_broker
async def test_a_write_is_one_publish_whatever_the_number_of_agents(
    tmp_path: Path, broker: Mosquitto
) -> None:
    agents = [agent(tmp_path, broker, f"n{i}") for i in range(5)]
    for a in agents:
        await a.start()
    try:
        shards = [await a.shard("s") for a in agents]
        await eventually(
            lambda: all(len(a.core.connected()) == 4 for a in agents), what="everyone linked"
        )
        w, sw = agents[0], shards[0]
        before = dict(w.counters)
        for k in range(20):
            sw[f"k{k}"] = k
            # one write at a time: each is its own batch, so its own broadcast
            await eventually(lambda k=k: all(s.get(f"k{k}") == k for s in shards), what="write")
        pushes = w.counters.get("broadcast_pushes", 0) - before.get("broadcast_pushes", 0)
        assert pushes == 20  # one publish per write, not one per agent
        # what the four others received came through the shard topic, not their inboxes
        assert all(a.counters.get("broadcasts_in", 0) >= 20 for a in agents[1:])
    finally:
        for a in agents:
            await a.close()


@needs_broker
async def test_an_agent_on_both_bridges_websockets_and_the_broker(
    tmp_path: Path, broker: Mosquitto
) -> None:
    both = Agent(
        "both", data_dir=tmp_path / "both", listen="ws://127.0.0.1:0", broker=broker.url, mesh="m1"
    )
    await both.start()
    near = Agent("near", data_dir=tmp_path / "near", peers=[both.address or ""], mesh="m1")
    far = agent(tmp_path, broker, "far")
    await near.start()
    await far.start()
    try:
        s_near, s_far = await near.shard("s"), await far.shard("s")
        await eventually(
            lambda: "both" in near.core.connected() and "both" in far.core.connected(),
            what="both linked",
        )
        s_near["from-websocket"] = 1  # near has no broker, far no websocket
        await eventually(lambda: s_far.get("from-websocket") == 1, what="websocket -> broker")
        # The bridge passes near's ask onto the broker and far's broadcast Ack back to near
        # (h-hubfwd): near counts far (5 s: a timeout of the API, not a timing assertion).
        await s_near.replicated(peers=2, timeout=5.0)
        s_far["from-broker"] = 2
        await eventually(lambda: s_near.get("from-broker") == 2, what="broker -> websocket")
        # The other way: the bridge relays near's ack to far over its link with it.
        await s_far.replicated(peers=2, timeout=5.0)
        assert set(near.core.connected()) == {"both"}
        assert set(far.core.connected()) == {"both"}
        assert both.address is not None and both.address.startswith("ws://")
        assert both.counters.get("broadcast_pushes", 0) >= 1  # it bridged onto the broker
        await eventually(lambda: s_near.digest() == s_far.digest(), what="equal digests")
    finally:
        await near.close()
        await far.close()
        await both.close()


@needs_broker
async def test_an_agent_offline_catches_up(tmp_path: Path, broker: Mosquitto) -> None:
    a, b = agent(tmp_path, broker, "a"), agent(tmp_path, broker, "b")
    await a.start()
    await b.start()
    try:
        sa = await a.shard("log")
        sb = await b.shard("log")
        sa["before"] = 1
        await eventually(lambda: sb.get("before") == 1, what="first write")
        await b.close()
        await eventually(lambda: not a.core.connected(), what="b gone from a's links")
        for k in range(30):
            sa[f"missed-{k}"] = k
        await sa.flush()
        b2 = agent(tmp_path, broker, "b")  # same store, a new run
        await b2.start()
        try:
            sb2 = await b2.shard("log")
            await eventually(lambda: len(sb2) == 31, what="catch-up")
            assert sb2.digest() == sa.digest()
        finally:
            await b2.close()
    finally:
        await a.close()


async def _retained_presence(url: str, topic: str) -> bytes | None:
    """The retained presence message of one agent as a fresh client sees it (None: none)."""
    cfg = parse_broker(url)
    async with aiomqtt.Client(cfg.host, cfg.port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(topic, qos=1)
        try:
            msg = await asyncio.wait_for(anext(aiter(c.messages)), 0.5)
        except TimeoutError:
            return None
        return bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else None


@needs_broker
async def test_last_will_clears_a_sigkilled_agents_presence(
    tmp_path: Path, broker: Mosquitto
) -> None:
    a = agent(tmp_path, broker, "watcher")
    await a.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crdtsync.cli",
        "agent",
        "--name",
        "victim",
        "--data",
        str(tmp_path / "victim"),
        "--broker",
        broker.url,
        "--mesh",
        "m1",
        "--shard",
        "board",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert ready["event"] == "ready" and ready["address"] == "mqtt:victim"
        await eventually(lambda: "victim" in a.core.connected(), what="link to the CLI agent")
        topic = presence_topic("crdtsync", "m1", "victim")
        record = await _retained_presence(broker.url, topic)
        assert record is not None and json.loads(record)["address"] == "mqtt:victim"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        t0 = time.monotonic()
        # The Will fires as the broker sees the socket die: the link is reported lost long
        # before the core's own suspect_timeout (5 s) could have said anything.
        await eventually(lambda: "victim" not in a.core.connected(), timeout=3, what="link dropped")
        assert time.monotonic() - t0 < 3
        assert await _retained_presence(broker.url, topic) is None  # cleared, not just stale
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await a.close()


@needs_broker
async def test_garbage_from_another_client_is_counted_never_applied(
    tmp_path: Path, broker: Mosquitto
) -> None:
    a, b = agent(tmp_path, broker, "a"), agent(tmp_path, broker, "b")
    await a.start()
    await b.start()
    try:
        sa, sb = await a.shard("s"), await b.shard("s")
        sa["x"] = 1
        await eventually(lambda: sb.get("x") == 1, what="first write")
        cfg = parse_broker(broker.url)
        async with aiomqtt.Client(cfg.host, cfg.port, protocol=aiomqtt.ProtocolVersion.V5) as evil:
            await evil.publish(
                inbox_topic("crdtsync", "m1", "a", "b"), b"\x01\x01garbage-not-a-frame", qos=1
            )
            await evil.publish(inbox_topic("crdtsync", "m1", "a", "b"), b"xx", qos=1)
            await evil.publish(presence_topic("crdtsync", "m1", "ghost"), b"{not json", qos=1)
            await evil.publish("crdtsync/m1/inbox/a/%zz", b"\x01\x01" + bytes(8), qos=1)
        await eventually(lambda: a.counters.get("garbage", 0) >= 3, what="garbage counted")
        assert a.counters.get("stale", 0) >= 1  # the well-formed header on no known link
        assert "b" in a.core.connected() and dict(sa) == {"x": 1}
        # and on the broadcast topics: not a frame, a Push of another shard, an Ack on a
        # shard topic, a Push on the acks topic, an invalid update in a well-formed Push
        from crdtsync import wire
        from crdtsync.messages import Ack, Push

        forged = Push("other", (sb.doc.get_update(),), None, 1)
        before = a.counters.get("garbage", 0)
        async with aiomqtt.Client(cfg.host, cfg.port, protocol=aiomqtt.ProtocolVersion.V5) as evil:
            for topic, payload in [
                (shard_topic("crdtsync", "m1", "s", "b"), b"\xffnot msgpack"),
                (shard_topic("crdtsync", "m1", "s", "b"), wire.encode(forged)),
                (shard_topic("crdtsync", "m1", "s", "b"), wire.encode(Ack((), ()))),
                (acks_topic("crdtsync", "m1", "b"), wire.encode(forged)),
                (
                    shard_topic("crdtsync", "m1", "s", "evil"),
                    wire.encode(Push("s", (b"\x01\x02garbage",), None, 1)),
                ),
                ("crdtsync/m1/shard/s/%zz", b"x"),
            ]:
                await evil.publish(topic, payload, qos=1)
        await eventually(lambda: a.counters.get("garbage", 0) >= before + 6, what="counted")
        assert dict(sa) == {"x": 1} and "other" not in a.shard_names()
        sb["y"] = 2  # the link still works
        await eventually(lambda: sa.get("y") == 2, what="a later write")
    finally:
        await a.close()
        await b.close()


async def test_an_open_with_a_bad_hello_gets_no_hello_back(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The core's handshake rule over a broker: the agent that receives an OPEN is the
    acceptor, and says nothing on that link but a CLOSE until its core validated the Hello.
    A valid OPEN then gets a's Hello (the control: this test sees a Hello when one is sent)."""
    from crdtsync.transports._mqtt_topics import CLOSE, DATA, OPEN, decode_frame, encode_frame

    from crdtsync import wire
    from crdtsync.messages import PROTOCOL_VERSION, Hello

    a = agent(tmp_path, broker, "a")
    await a.start()
    try:
        cfg = parse_broker(broker.url)
        to_a = inbox_topic("crdtsync", "m1", "a", "evil")
        got: dict[bytes, list[tuple[int, bytes]]] = {}
        async with aiomqtt.Client(cfg.host, cfg.port, protocol=aiomqtt.ProtocolVersion.V5) as evil:
            await evil.subscribe(inbox_topic("crdtsync", "m1", "evil", "a"), qos=1)

            async def collect() -> None:
                async for message in evil.messages:
                    kind, link, body = decode_frame(bytes(message.payload))  # type: ignore[arg-type]
                    got.setdefault(link, []).append((kind, body))

            reader = asyncio.create_task(collect())
            bad = {
                b"othermsh": wire.encode(Hello(PROTOCOL_VERSION, "other", "evil", None)),
                b"badvers!": wire.encode(Hello(PROTOCOL_VERSION + 1, "m1", "evil", None)),
                b"garbage!": b"\x92\x63\x00",
            }
            for link, body in bad.items():
                await evil.publish(to_a, encode_frame(OPEN, link, body), qos=1)
            good = wire.encode(Hello(PROTOCOL_VERSION, "m1", "evil", None))
            await evil.publish(to_a, encode_frame(OPEN, b"goodlink", good), qos=1)
            await eventually(lambda: len(got) == 4, what="an answer on each link")
            await eventually(lambda: len(got[b"goodlink"]) >= 1, what="a's Hello")
            reader.cancel()
        for link in bad:
            assert [kind for kind, _ in got[link]] == [CLOSE], link  # no Hello, no name
        kind, body = got[b"goodlink"][0]
        assert kind == DATA and wire.decode(body) == a.core.hello()
    finally:
        await a.close()


@needs_broker
async def test_a_refusing_broker_is_a_clear_error_then_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = Mosquitto(tmp_path / "auth", users={"alice": "right"}).start()
    try:
        url = f"mqtt://alice:wrong@127.0.0.1:{b.port}"
        bad = Agent("alice", data_dir=tmp_path / "alice", broker=url)
        with pytest.raises(BrokerRefused, match="refused us.*Not authorized"):
            await bad.start()
        # raised, not logged too
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        await bad.close()
        good = Agent(
            "alice", data_dir=tmp_path / "alice2", broker=f"mqtt://alice:right@127.0.0.1:{b.port}"
        )
        await good.start()
        assert good._transport is not None and good._transport.state == "connected"  # type: ignore[attr-defined]
        await good.close()

        # Left running against the refusing broker: a few attempts, one log line.
        import random

        from crdtsync.transports.memory import MemoryReplicas
        from crdtsync.transports.mqtt import mqtt_factory

        from crdtsync.gossip import GossipCore

        core = GossipCore("alice", MemoryReplicas(random.Random(1)), rng=random.Random(1))
        t = mqtt_factory(url)(core, listen=None, max_frame=1 << 20, on_activity=lambda: None)
        caplog.set_level(logging.WARNING, logger="crdtsync.transports.mqtt")
        caplog.clear()
        task = asyncio.create_task(t.run())
        await asyncio.sleep(3.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        attempts = t.counters["attempts"]
        assert 2 <= attempts <= 5, attempts  # 0.5, 1, 2 s (jittered down to half): not a storm
        errors = [r for r in caplog.records if "refused us" in r.getMessage()]
        assert len(errors) == 1
    finally:
        b.stop()


def test_credentials_are_refused_rather_than_weakened() -> None:
    from crdtsync.transports.mqtt import mqtt_factory

    factory = mqtt_factory("mqtt://127.0.0.1:1")
    with pytest.raises(UsageError, match="credentials"):
        factory(object(), listen=None, max_frame=1, on_activity=lambda: None, credentials=object())  # type: ignore[arg-type]


@needs_broker
async def test_a_broker_restart_loses_no_acknowledged_write(
    tmp_path: Path, broker: Mosquitto
) -> None:
    a, b = agent(tmp_path, broker, "a"), agent(tmp_path, broker, "b")
    await a.start()
    await b.start()
    try:
        sa, sb = await a.shard("s"), await b.shard("s")
        for k in range(10):
            sa[f"acked-{k}"] = k
        await sa.replicated(peers=1, timeout=10)
        broker.stop()  # no persistence: sessions and retained presence are gone with it
        await eventually(
            lambda: not a.core.connected() and not b.core.connected(), what="links down"
        )
        for k in range(10):
            sa[f"offline-{k}"] = k  # acknowledged locally (on disk) while the broker is down
        await sa.flush()
        broker.start()  # same port
        await eventually(lambda: len(sb) == 20, timeout=15, what="sync after the broker restart")
        assert sb.digest() == sa.digest()
        await sa.replicated(peers=1, timeout=10)
    finally:
        await a.close()
        await b.close()


@needs_broker
async def test_two_bridged_brokers_carry_a_shard(tmp_path: Path, broker: Mosquitto) -> None:
    # The second broker bridges every crdtsync topic to the first, both ways, retained included.
    bridge = [
        "connection to-first",
        f"address 127.0.0.1:{broker.port}",
        "topic crdtsync/# both 1",
        "cleansession true",
        "try_private true",
    ]
    second = Mosquitto(tmp_path / "second", extra=bridge).start()
    try:
        a = agent(tmp_path, broker, "a")
        b = Agent("b", data_dir=tmp_path / "b", broker=second.url, mesh="m1", seed=2)
        await a.start()
        await b.start()
        try:
            sa, sb = await a.shard("s"), await b.shard("s")
            sa["from-a"] = 1
            sb["from-b"] = 2
            await eventually(
                lambda: len(sa) == 2 and len(sb) == 2, timeout=15, what="across the bridge"
            )
            assert sa.digest() == sb.digest()
        finally:
            await a.close()
            await b.close()
    finally:
        second.stop()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test broker CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# paho-mqtt 2.2 does not close the socket when the TLS handshake fails (the verification below);
# it is closed when garbage-collected, which Python reports. Collected within this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@needs_broker
async def test_tls_and_a_login_pass_through(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path / "tls")
    b = Mosquitto(tmp_path / "tlsbroker", users={"a": "pa", "b": "pb"}, tls=(ca, cert, key)).start()
    try:
        agents = [
            Agent(
                n,
                data_dir=tmp_path / n,
                mesh="m1",
                broker=f"mqtts://{n}:p{n}@127.0.0.1:{b.port}?cafile={ca}",
            )
            for n in ("a", "b")
        ]
        for ag in agents:
            await ag.start()
        try:
            sa, sb = await agents[0].shard("s"), await agents[1].shard("s")
            sa["secret"] = "over tls"
            await eventually(lambda: sb.get("secret") == "over tls", what="sync over mqtts")
        finally:
            for ag in agents:
                await ag.close()
        # Without our CA the broker's certificate does not verify: no connection, no data.
        plain = Agent(
            "a", data_dir=tmp_path / "a2", mesh="m1", broker=f"mqtts://a:pa@127.0.0.1:{b.port}"
        )
        await plain.start()
        try:
            assert plain._transport is not None and plain._transport.state == "unreachable"  # type: ignore[attr-defined]
        finally:
            await plain.close()
            gc.collect()
    finally:
        b.stop()


@needs_broker
async def test_broker_acls_pin_the_sender_to_the_login(tmp_path: Path) -> None:
    # The ACL patterns the README gives: an agent writes only as itself, reads only its inbox.
    acl = tmp_path / "acl"
    acl.write_text(
        "pattern write crdtsync/+/inbox/+/%u\n"
        "pattern write crdtsync/+/presence/%u\n"
        "pattern write crdtsync/+/shard/+/%u\n"
        "pattern write crdtsync/+/acks/%u\n"
        "pattern read crdtsync/+/inbox/%u/+\n"
        "pattern read crdtsync/+/presence/+\n"
        "pattern read crdtsync/+/shard/+/+\n"
        "pattern read crdtsync/+/acks/+\n"
    )
    users = {"a": "pa", "b": "pb", "mallory": "pm"}
    b = Mosquitto(tmp_path / "aclbroker", users=users, extra=[f"acl_file {acl}"]).start()
    try:
        agents = [
            Agent(n, data_dir=tmp_path / n, mesh="m1", broker=f"mqtt://{n}:p{n}@127.0.0.1:{b.port}")
            for n in ("a", "b")
        ]
        for ag in agents:
            await ag.start()
        try:
            sa, sb = await agents[0].shard("s"), await agents[1].shard("s")
            sa["x"] = 1
            await eventually(lambda: sb.get("x") == 1, what="sync under ACLs")
            a = agents[0]
            before = a.counters.get("garbage", 0)
            async with aiomqtt.Client(
                "127.0.0.1",
                b.port,
                username="mallory",
                password="pm",
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as evil:
                # As b: dropped by the broker. As herself: delivered (and counted as garbage).
                for topic in (
                    inbox_topic("crdtsync", "m1", "a", "b"),
                    shard_topic("crdtsync", "m1", "s", "b"),
                    inbox_topic("crdtsync", "m1", "a", "mallory"),
                ):
                    try:
                        await evil.publish(topic, b"junk", qos=1)
                    except aiomqtt.MqttCodeError:
                        pass  # (a broker may say "not authorized" in the PUBACK)
                try:
                    await evil.publish(
                        presence_topic("crdtsync", "m1", "b"), b"", qos=1, retain=True
                    )
                except aiomqtt.MqttCodeError:
                    pass
            await eventually(
                lambda: a.counters.get("garbage", 0) > before, what="mallory's own frame"
            )
            await asyncio.sleep(0.2)
            assert a.counters.get("garbage", 0) == before + 1  # not the one posing as b
            assert "b" in a.core.connected()  # b's presence was not cleared by mallory
        finally:
            for ag in agents:
                await ag.close()
    finally:
        b.stop()


@needs_broker
async def test_a_stalled_broker_pauses_the_links_then_they_catch_up(
    tmp_path: Path, broker: Mosquitto
) -> None:
    from crdtsync.transports.mqtt import INFLIGHT_HIGH

    a, b = agent(tmp_path, broker, "a"), agent(tmp_path, broker, "b")
    await a.start()
    await b.start()
    try:
        sa, sb = await a.shard("s"), await b.shard("s")
        sa["x"] = 0
        await eventually(lambda: sb.get("x") == 0, what="first write")
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)  # alive (no Will, no disconnect) but not reading
        try:
            ta = a._transport
            assert ta is not None
            for k in range(40):
                sa[f"big-{k}"] = f"{k}" * 400_000  # 16 MB of pushes for b
                await asyncio.sleep(0.01)
            await eventually(lambda: ta.counters.get("paused", 0) >= 1, what="links paused")
            assert ta.session.inflight < INFLIGHT_HIGH + (2 << 20)  # type: ignore[attr-defined]
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        await eventually(lambda: len(sb) == 41, timeout=20, what="b catches up")
        assert sb.digest() == sa.digest()
        # (b may catch up by anti-entropy while a's held broadcasts still drain)
        await eventually(lambda: not ta.session.paused, what="resumed")  # type: ignore[attr-defined]
    finally:
        await a.close()
        await b.close()


def test_a_process_decodes_a_broadcast_once_and_caches_small_frames_only() -> None:
    """Agents sharing a process share the decode of a broadcast frame (same bytes: the same
    frozen message), but a client publishing large frames cannot fill memory through it."""
    import pycrdt
    from crdtsync.transports import _mqtt_incoming as driver

    from crdtsync import wire
    from crdtsync.errors import ProtocolError
    from crdtsync.messages import Push

    doc = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)["k"] = "v"
    small = wire.encode(Push("s", (doc.get_update(),), seq=1))
    doc.get("root", type=pycrdt.Map)["big"] = "x" * (driver._DECODED_MAX_BYTES + 1)
    big = wire.encode(Push("s", (doc.get_update(),), seq=2))
    one = driver._decode_broadcast(bytes(small), 1 << 24)
    assert driver._decode_broadcast(bytes(small), 1 << 24) is one
    assert one == wire.decode(small)
    assert driver._decode_broadcast(big, 1 << 24) == wire.decode(big)
    assert big not in driver._DECODED
    with pytest.raises(ProtocolError):  # over this agent's max_frame: refused, cached or not
        driver._decode_broadcast(bytes(small), len(small) - 1)

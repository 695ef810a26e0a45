"""Identities, the mesh CA made by the `crdtsync keys` CLI, tokens, the mesh-secret handshake
and the peer-certificate check, on real files in a tmp dir (no sockets here)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crdtsync.cli import main
from crdtsync.errors import CloseCode, CredentialsError, ProtocolError
from crdtsync.security.acl import Permissions
from crdtsync.security.ca import MeshCA, agent_paths, certificate_info, load_revoked
from crdtsync.security.credentials import Credentials
from crdtsync.security.handshake import MAGIC, NonceCache, SecretHandshake
from crdtsync.security.identity import (
    Identity,
    canonical_bytes,
    load_private_key,
    verify_record,
)
from crdtsync.security.tokens import issue_token, verify_token


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    cli("keys", "init-mesh", "--dir", str(d), "--mesh", "m1")
    return d


# -- identity ------------------------------------------------------------------------------


def test_private_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    ident = Identity.generate("a")
    path = tmp_path / "a.key"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Identity.load("a", path)
    sig = again.sign("ack", ["a", b"sv", 3])
    assert verify_record(ident.public_key, "ack", ["a", b"sv", 3], sig)
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by others"):
        load_private_key(path)


def test_canonical_bytes_are_unambiguous_and_domain_separated() -> None:
    assert canonical_bytes("x", ["ab", "c"]) != canonical_bytes("x", ["a", "bc"])
    assert canonical_bytes("x", [b"1"]) != canonical_bytes("x", ["1"])
    assert canonical_bytes("x", [1]) != canonical_bytes("x", [True])
    assert canonical_bytes("x", [None]) != canonical_bytes("x", [b""])
    ident = Identity.generate("a")
    sig = ident.sign("ack", ["a", 1])
    assert not verify_record(ident.public_key, "peer", ["a", 1], sig)  # other kind of record
    assert not verify_record(ident.public_key, "ack", ["a", 2], sig)
    assert not verify_record(Identity.generate("b").public_key, "ack", ["a", 1], sig)


# -- CA and CLI ----------------------------------------------------------------------------


def test_init_mesh_layout_and_modes(keys: Path) -> None:
    assert json.loads((keys / "mesh.json").read_text()) == {"mesh": "m1"}
    for private in ("ca.key", "mesh.secret"):
        assert stat.S_IMODE((keys / private).stat().st_mode) == 0o600
    result = CliRunner().invoke(main, ["keys", "init-mesh", "--dir", str(keys)])
    assert result.exit_code != 0 and "already holds a mesh CA" in result.output


def test_issue_puts_name_and_permissions_in_the_certificate(keys: Path) -> None:
    out = cli(
        "keys",
        "issue",
        "alice",
        "--dir",
        str(keys),
        "--read",
        "tasks/*,docs/**",
        "--write",
        "tasks/alice",
    )
    assert "alice" in out
    cert_path, key_path = agent_paths(keys, "alice")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    info = certificate_info(cert)
    assert info.name == "alice" and info.mesh == "m1"
    assert info.permissions == Permissions(read=("tasks/*", "docs/**"), write=("tasks/alice",))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["crdtsync://m1/alice"]
    ca = x509.load_pem_x509_certificate((keys / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    with pytest.raises(CredentialsError):
        certificate_info(ca)  # the CA certificate is not an agent certificate
    creds = Credentials.from_dir(keys, "alice")
    assert creds.tls and creds.permissions == info.permissions
    with pytest.raises(CredentialsError, match="crdtsync keys issue bob"):
        Credentials.from_dir(keys, "bob", mode="tls")


def test_revoke_writes_a_ca_signed_list(keys: Path) -> None:
    cli("keys", "issue", "alice", "--dir", str(keys))
    cli("keys", "issue", "bob", "--dir", str(keys))
    cli("keys", "revoke", "alice", "--dir", str(keys))
    ca = x509.load_pem_x509_certificate((keys / "ca.pem").read_bytes())
    alice = certificate_info(
        x509.load_pem_x509_certificate(agent_paths(keys, "alice")[0].read_bytes())
    )
    bob = certificate_info(x509.load_pem_x509_certificate(agent_paths(keys, "bob")[0].read_bytes()))
    revoked = load_revoked(keys / "revoked.pem", ca)
    assert alice.serial in revoked and bob.serial not in revoked
    with pytest.raises(CredentialsError, match="revoked"):
        Credentials.from_dir(keys, "alice")
    # a list signed by another CA is refused
    other = MeshCA.load(_other_ca(keys.parent))
    other.issue("x")
    other.revoke("x")
    with pytest.raises(CredentialsError, match="not signed by the mesh CA"):
        load_revoked(other.root / "revoked.pem", ca)


def _other_ca(tmp: Path) -> Path:
    d = tmp / "other"
    cli("keys", "init-mesh", "--dir", str(d), "--mesh", "m1")
    return d


# -- tokens --------------------------------------------------------------------------------


def test_token_scopes_expiry_revocation_and_alg(keys: Path) -> None:
    token = cli(
        "keys", "token", "svc", "--dir", str(keys), "--read", "tasks/*", "--days", "1"
    ).strip()
    ca = x509.load_pem_x509_certificate((keys / "ca.pem").read_bytes())
    ident = verify_token(token, ca, "m1")
    assert ident.name == "svc" and ident.method == "token"
    assert ident.permissions.may_read("tasks/a") and not ident.permissions.may_write("tasks/a")
    with pytest.raises(CredentialsError):
        verify_token(token, ca, "other-mesh")
    old = issue_token(
        MeshCA.load(keys),
        "svc",
        Permissions.full(),
        days=1,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
    )
    with pytest.raises(CredentialsError, match="expired"):
        verify_token(old, ca, "m1")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(
        {**claims, "crdtsync": {"read": ["**"], "write": ["**"]}}, "k" * 32, algorithm="HS256"
    )
    with pytest.raises(CredentialsError):
        verify_token(forged, ca, "m1")
    cli("keys", "revoke", "svc", "--dir", str(keys))
    with pytest.raises(CredentialsError, match="revoked"):
        verify_token(token, ca, "m1", revoked=load_revoked(keys / "revoked.pem", ca))


# -- mesh-secret handshake -----------------------------------------------------------------

SECRET = b"s" * 32


def run(client: SecretHandshake, server: SecretHandshake) -> list[bytes]:
    frames = [client.start()]
    m2 = server.receive(frames[-1])
    assert m2 is not None
    frames.append(m2)
    m3 = client.receive(m2)
    assert m3 is not None
    frames.append(m3)
    m4 = server.receive(m3)
    assert m4 is not None
    frames.append(m4)
    assert client.receive(m4) is None
    return frames


def test_handshake_authenticates_both_names_without_secret_on_wire() -> None:
    c = SecretHandshake(SECRET, "m1", "alice", client=True)
    s = SecretHandshake(SECRET, "m1", "bob", client=False, replay_cache=NonceCache())
    frames = run(c, s)
    assert c.peer == "bob" and s.peer == "alice"
    wire = b"".join(frames)
    assert SECRET not in wire and b"m1" not in wire
    assert (
        b"bob" not in frames[1]
    )  # the server says nothing but a nonce before the client proved itself


@pytest.mark.parametrize(("secret", "mesh"), [(b"x" * 32, "m1"), (SECRET, "m2")])
def test_wrong_secret_or_mesh_is_unauthenticated(secret: bytes, mesh: str) -> None:
    c = SecretHandshake(secret, mesh, "alice", client=True)
    s = SecretHandshake(SECRET, "m1", "bob", client=False)
    m2 = s.receive(c.start())
    assert m2 is not None
    m3 = c.receive(m2)
    assert m3 is not None
    with pytest.raises(ProtocolError) as err:
        s.receive(m3)
    assert err.value.code is CloseCode.UNAUTHENTICATED and s.peer is None


def test_replayed_transcript_is_refused() -> None:
    cache = NonceCache()
    frames = run(
        SecretHandshake(SECRET, "m1", "alice", client=True),
        SecretHandshake(SECRET, "m1", "bob", client=False, replay_cache=cache),
    )
    # the whole client side replayed: the server has seen this nonce
    s2 = SecretHandshake(SECRET, "m1", "bob", client=False, replay_cache=cache)
    with pytest.raises(ProtocolError) as err:
        s2.receive(frames[0])
    assert err.value.code is CloseCode.REPLAYED
    # without the cache (another server, or evicted), the old proof fails on the new nonce
    s3 = SecretHandshake(SECRET, "m1", "bob", client=False, replay_cache=NonceCache())
    assert s3.receive(frames[0]) is not None
    with pytest.raises(ProtocolError) as err:
        s3.receive(frames[2])
    assert err.value.code is CloseCode.UNAUTHENTICATED
    # a replayed server answer fails against the client's fresh nonce
    c2 = SecretHandshake(SECRET, "m1", "alice", client=True)
    c2.start()
    assert c2.receive(frames[1]) is not None
    with pytest.raises(ProtocolError):
        c2.receive(frames[3])


def test_reflection_and_garbage_are_refused() -> None:
    c = SecretHandshake(SECRET, "m1", "alice", client=True)
    s = SecretHandshake(SECRET, "m1", "bob", client=False)
    m2 = s.receive(c.start())
    assert m2 is not None
    m3 = c.receive(m2)
    assert m3 is not None
    reflected = MAGIC + bytes([4]) + m3[len(MAGIC) + 1 :]  # the client's own proof as the server's
    with pytest.raises(ProtocolError):
        c.receive(reflected)
    for junk in (b"", b"hello", MAGIC + b"\x03" + b"\x00" * 40, "text"):
        with pytest.raises(ProtocolError):
            SecretHandshake(SECRET, "m1", "bob", client=False).receive(junk)  # type: ignore[arg-type]


# -- peer certificate check ----------------------------------------------------------------


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_verify_peer_certificate(keys: Path) -> None:
    ca = MeshCA.load(keys)
    creds_dir_cert, _ = ca.issue("me")
    creds = Credentials.from_dir(keys, "me")
    good, _ = ca.issue("alice", Permissions(read=("tasks/*",)))
    ident = creds.verify_peer(_der(good))
    assert ident.name == "alice" and ident.permissions.may_read("tasks/x")
    old, _ = ca.issue("old", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    cases = [
        (None, CloseCode.UNAUTHENTICATED),
        (_der(old), CloseCode.CERT_EXPIRED),
        (_der(MeshCA.load(_other_ca(keys.parent)).issue("alice")[0]), CloseCode.UNAUTHENTICATED),
    ]
    for der, code in cases:
        with pytest.raises(ProtocolError) as err:
            creds.verify_peer(der)
        assert err.value.code is code
    ca.revoke("alice")
    with pytest.raises(ProtocolError) as err:
        creds.verify_peer(_der(good))
    assert err.value.code is CloseCode.CERT_REVOKED
    assert creds_dir_cert.serial_number not in creds.revoked()


# -- signed records ------------------------------------------------------------------------


def test_signed_acks_and_announcements_need_the_named_agents_key(keys: Path) -> None:
    from crdtsync.security.records import MAX_INCARNATION, sign_ack, sign_announcement

    ca = MeshCA.load(keys)
    alice_cert, alice_key = ca.issue("alice")
    bob_cert, bob_key = ca.issue("bob")
    ca.issue("me")
    creds = Credentials.from_dir(keys, "me")
    ring = creds.keyring()
    assert ring.public_key("alice") is None
    assert ring.add_certificate(_der(alice_cert)).name == "alice"
    ring.add_certificate(_der(bob_cert))
    sig = sign_ack(alice_key, "m1", "alice", "tasks/a", b"sv", b"ds")
    assert ring.verify_ack("alice", "tasks/a", b"sv", b"ds", sig)
    assert not ring.verify_ack("alice", "tasks/a", b"sv2", b"ds", sig)  # another state
    assert not ring.verify_ack("bob", "tasks/a", b"sv", b"ds", sig)  # relayed as someone else's
    forged = sign_ack(bob_key, "m1", "alice", "tasks/a", b"sv", b"ds")  # bob speaking for alice
    assert not ring.verify_ack("alice", "tasks/a", b"sv", b"ds", forged)
    assert not ring.verify_ack("carol", "tasks/a", b"sv", b"ds", sig)  # unknown agent
    ann = sign_announcement(alice_key, "m1", "alice", "wss://127.0.0.1:1", 3)
    assert ring.verify_announcement("alice", "wss://127.0.0.1:1", 3, ann)
    assert not ring.verify_announcement("alice", "wss://evil:1", 3, ann)  # redirected address
    assert not ring.verify_announcement("alice", "wss://127.0.0.1:1", 4, ann)  # pushed incarnation
    with pytest.raises(ValueError):
        sign_announcement(alice_key, "m1", "alice", None, MAX_INCARNATION + 1)
    # the signature over an ack never passes as an announcement (domain separation)
    assert not ring.verify_announcement("alice", "tasks/a", 0, sig)
    # a revoked certificate is not added to the ring
    ca.revoke("bob")
    with pytest.raises(ProtocolError) as err:
        creds.keyring().add_certificate(_der(bob_cert))
    assert err.value.code is CloseCode.CERT_REVOKED
    assert creds.identity().public_key is not None


def test_credentials_verify_tokens_with_live_revocation(keys: Path) -> None:
    cli("keys", "issue", "door", "--dir", str(keys))
    creds = Credentials.from_dir(keys, "door")
    token = cli("keys", "token", "svc", "--dir", str(keys), "--write", "tasks/*").strip()
    ident = creds.verify_token(token)
    assert ident.name == "svc" and ident.permissions.may_write("tasks/x")
    cli("keys", "revoke", "svc", "--dir", str(keys))
    with pytest.raises(CredentialsError, match="revoked"):
        creds.verify_token(token)
    with pytest.raises(CredentialsError):
        Credentials.from_dir(keys, "door", mode="secret").verify_token(token)

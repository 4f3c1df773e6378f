"""Check the peer-authentication test vectors of docs/PROTOCOL.md with implementations
independent of peershare: python-spake2 (magic-wormhole's SPAKE2) and pyca/cryptography
(HKDF-SHA256, AES-256-GCM). Run by .ci/run; needs `pip install spake2 cryptography`."""

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B

SECRET = b"orbit-canvas-tiger"
ID_A, ID_B = b"7/aaaaaaaaaaaa", b"7/bbbbbbbbbbbb"
SDP = b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\na=fingerprint:sha-256 AB:CD\r\n"
AAD = b"peershare/2 offer\naaaaaaaaaaaa\nbbbbbbbbbbbb\n00000000-0000-4000-8000-000000000001"
EXPECTED = {
    "msg_a": "41e57eb68a1a22519b1ddb63e60706d59432d73ada7f764ce32561fc97c88db60a",
    "msg_b": "42bd16f4d8e3c7e2dc2fea5986f8d3b596263e8523e3988591fb6dd120f3a10a0b",
    "spake2_key": "699854c2e5a043241a8b924767c25538da14445a08f98cb4b22b4bc85d62e9ee",
    "pair_key": "730ed94006e32f329d5f739322cf04cb2ba90edebd86dbfd5e58c455e3ededc8",
    "sealed_offer": "BwcHBwcHBwcHBwcHLYOs2ecnY434fHmbk0Lfh2Uhq5zcnyd2qBstATYZOCZmMhCStcrV2ROe1ZerKgByzVSdJFlN3GkFGiRnf2IurY3jE4CBn8flsCHoAB6qpQ==",
}


def with_scalar(klass, fill):
    """A SPAKE2 side whose secret scalar is 31 bytes of `fill` (little-endian) and a 0."""
    side = klass(SECRET, idA=ID_A, idB=ID_B)
    side.start()
    state = json.loads(side.serialize())
    state["xy_scalar"] = (bytes([fill] * 31) + b"\0").hex()
    return klass.from_serialized(json.dumps(state).encode())


a, b = with_scalar(SPAKE2_A, 0x11), with_scalar(SPAKE2_B, 0x22)
msg_a, msg_b = a.side + a.outbound_message, b.side + b.outbound_message
key = a.finish(msg_b)
assert key == b.finish(msg_a)
pair = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"peershare/2 seal").derive(key)
nonce = bytes([7] * 12)
sealed = base64.b64encode(nonce + AESGCM(pair).encrypt(nonce, SDP, AAD)).decode()
got = {
    "msg_a": msg_a.hex(),
    "msg_b": msg_b.hex(),
    "spake2_key": key.hex(),
    "pair_key": pair.hex(),
    "sealed_offer": sealed,
}
for name, value in EXPECTED.items():
    assert got[name] == value, f"{name}: expected {value}, got {got[name]}"
print("pake vectors: ok")

"""
Keys pinned: the bodies of tests/key_samples.py keep the exact keys they had.

Users have databases and cassettes keyed by the canonical form as it was; a
body whose key moves is a miss for every entry recorded with it. The digests
below were computed with the keying code before large bodies were
canonicalised in a stream (commit c957452), so the stream must spell every
body exactly as the whole-document code did, escapes, numbers, ignore rules,
UTF-16 and all.
"""

from __future__ import annotations

import hashlib

import pytest

from stasis.ignore import parse_ignore
from stasis.keys import KeyRequest, derive_key, parse_body
from tests.key_samples import SAMPLES

SECRET = b"0123456789abcdef0123456789abcdef"

#: name, how the normalized form starts, SHA-256 of the normalized form, the key.
PINNED = [
    (
        "chat",
        "json:",
        "a659385e4a0c0cb96849ea6e8bb79cb1143126154f02d28e0fa50a49278121a0",
        "c66836c0b082fee76b2874bf756197f537cc3adb014d1eccde7e69be086b3639",
    ),  # 229 B
    (
        "chat-compact",
        "json:",
        "a659385e4a0c0cb96849ea6e8bb79cb1143126154f02d28e0fa50a49278121a0",
        "c66836c0b082fee76b2874bf756197f537cc3adb014d1eccde7e69be086b3639",
    ),  # 197 B
    (
        "chat-indented-sorted",
        "json:",
        "a659385e4a0c0cb96849ea6e8bb79cb1143126154f02d28e0fa50a49278121a0",
        "c66836c0b082fee76b2874bf756197f537cc3adb014d1eccde7e69be086b3639",
    ),  # 287 B
    (
        "chat-utf16",
        "json:",
        "a659385e4a0c0cb96849ea6e8bb79cb1143126154f02d28e0fa50a49278121a0",
        "c66836c0b082fee76b2874bf756197f537cc3adb014d1eccde7e69be086b3639",
    ),  # 410 B
    (
        "chat-utf8-bom",
        "json:",
        "a659385e4a0c0cb96849ea6e8bb79cb1143126154f02d28e0fa50a49278121a0",
        "c66836c0b082fee76b2874bf756197f537cc3adb014d1eccde7e69be086b3639",
    ),  # 214 B
    (
        "chat-ignore",
        "json:",
        "f76c9370b24943eee3cbe7f30f173311439a304aa037d75f2e92babb58e85508",
        "d00b617c0ab5e481d80761fb0769ab60363376b10fe7d7058c34e55bf9ff812b",
    ),  # 229 B
    (
        "numbers",
        "json:",
        "13ecaf03416a53b539d39f407a3e755dcccca94ffd5e57c59fb30b1614b2de7e",
        "a54d241e1b10532aa6d339695189deefe1e260c60a5c72fda5a2363400d41862",
    ),  # 4445 B
    (
        "constants",
        "json:",
        "e57edd740eb4b621af35522627ab6ada3f60cf74df74e2509fa83fac249c0a29",
        "2cef3dfd980dca3fc631831a92b8154c8f55b4877c25dc73912a49d8cec27ddb",
    ),  # 54 B
    (
        "escapes",
        "json:",
        "5069b9b4e9df5f51ee38fca06dad08208d158a01644a1700e80b9bc525b322c9",
        "dcf20d11fce24a557e2791a995082117874f0a2c435d6a4f865903f02f79947d",
    ),  # 4277 B
    (
        "lone-surrogates",
        "json:",
        "251dbc27ca98a66e01080cb679f9e862fbd58bc79c6fdc01643675372141e59a",
        "6fd392583b520f56c9a88c1f5042a7e6986ed1a73a7ae426924047d008053e73",
    ),  # 55 B
    (
        "empty-containers",
        "json:",
        "a1bfc5aa06a024b0303cc106b703060066bfc8b8116e6a9a840124a974145906",
        "630630d5b84a777fe31f9da182020d8e7356c89fe8233d3470a29eea33bfd1bb",
    ),  # 47 B
    (
        "scalar-string",
        "json:",
        "fab4f0afb64b824103ebf22fa65185541ffbba5ea09f1feaf1b93921d15ac97a",
        "16cdf2d27933348463cddef27b4d3e1f153baf1dec231ef64cc7696aa886cd43",
    ),  # 15 B
    (
        "scalar-number",
        "json:",
        "0f9e041a8547233a7653f9060d430d3cc7eea42f7040958c5b17ab9ed13b5038",
        "6aa49b5476d65c9b52918a4f13168ed3a0e61934bee9ffaf242c9d883fbe0bba",
    ),  # 10 B
    (
        "depth-128",
        "json:",
        "8d74785f531960030dca2594536d040b25b35591095c3066be7a20ba5d39e125",
        "d83d05e9574b88366d8436ef61b5b2ced69b906d3cd2cd8f6adf3c2d3d70d5f8",
    ),  # 257 B
    (
        "depth-129",
        "raw:[",
        "07220fbeb4cd03ef280a235b203bcde820803506ecd02d078c08953b02b0bee3",
        "c1ba216d0b11ddb992d26d12e72259e7bf9d54d7d1ab6645c676b1b8d483d408",
    ),  # 259 B
    (
        "duplicate",
        "raw:{",
        "f777f7bcaabccef67ec33e8a53a06ead46b3cbd1a9702acb6cf19c41f986632a",
        "a72a7ba86929ed3e2e984d07b10e669bf38c13fde70314d8305d6bc58f25efba",
    ),  # 31 B
    (
        "not-json",
        "raw:m",
        "77145d782f1622d0794b3a54355bab08627248d855e98602391816949e7f49e6",
        "a82e69ce75a700e4ced0485afdf68924e034a216301c5ece58bb3b7f02463efe",
    ),  # 21 B
    (
        "trailing-comma",
        "raw:{",
        "6bc44da3b654bc873ed2b097dc88215f2b88f60be47ffd3aa545853bbe969adf",
        "ace8a1aa4e3509f1b8ffd69b9cd54bac6772e5acd71004b4837292a780fff2ba",
    ),  # 14 B
    (
        "conversation",
        "json:",
        "55eef5730fc79ebe274f619c33930f06307053dd7e5c6fe6547c2e6b195cf327",
        "6e433e0e241d2521d9246926340aa60d7c947b4a920ba5c0cf051763293394dd",
    ),  # 973906 B
    (
        "conversation-ascii-ignore",
        "json:",
        "beb72ce77ccbd3c77949f01f1118f38100382ea3e9ff40400f29ffd55063c303",
        "06817758b39a4676bbe6f81923e0ca0348269e340a14e542acd7fa869cfe7692",
    ),  # 1104691 B
    (
        "token-arrays",
        "json:",
        "9ad089a4087077328005da57a7fa532cdb33d5f075fef6f7b0189f085b012e3e",
        "b757d05d79b9eba775e15b5b3da9ec1a897045c8d7991b2800cd15bbba705d7c",
    ),  # 551251 B
    (
        "token-arrays-compact",
        "json:",
        "f9d38bd03466a82aa1a825f6a30d05885f6a3cbba134a79344d7b58d68906800",
        "b0be62113d9a39882d93cf154a9c3ce606f971e8fd05c036ebdcce067333089d",
    ),  # 235580 B
    (
        "image",
        "json:",
        "01f6f5f00594ff95d29d94ec4d3f46c916aa26ee886f50eccfb07729e53f3b7c",
        "4e6543c6dfe4a0591bf85842baab21f943b3bcb81e79d067bacc5058f05633bb",
    ),  # 2133525 B
    (
        "cjk-document",
        "json:",
        "85bb33e0c1240d3724b0602c5d86f2a5701bed27a095f4e586fefc3727564dba",
        "7e23bc730997e9f2a09fdfa9d71381f9e47fbfc17bc31de19965b615abe82120",
    ),  # 1620012 B
    (
        "emoji-document",
        "json:",
        "70b9b3aeff9916ceb2734505abf3e2267b14f85e728efa5f2c4f7bdfdfdb2cc5",
        "1b587582a0c182b450588828e52670df75e9dc493d203eec6abd0b21211daaff",
    ),  # 540012 B
    (
        "emoji-escaped",
        "json:",
        "70b9b3aeff9916ceb2734505abf3e2267b14f85e728efa5f2c4f7bdfdfdb2cc5",
        "1b587582a0c182b450588828e52670df75e9dc493d203eec6abd0b21211daaff",
    ),  # 1500012 B
    (
        "ascii-with-one-emoji",
        "json:",
        "d3d81af155122d9a44edc139d14daec7131e35e71b19ce8e61da5c54df5173a4",
        "9dd22698e23318db74e6dd6092532208564a2099959f8aa68392a4bfaed65cc4",
    ),  # 1200008 B
    (
        "escapes-large",
        "json:",
        "d66b02bb79c37f85693f308d1be7070cb6afea113f7a47f9b30e42d77fd30d58",
        "ce7b9cb919506b5a63c77b39430bc9ef06cf3a89cf92afc69c309a1ed493aba0",
    ),  # 2646705 B
    (
        "numbers-large",
        "json:",
        "b978da7870b31a75e6fafbf4c8ea85d21b4480f5a6ef08b2f3d65d5ddc615ba3",
        "cd64b99638ce9040009e34bbdd19c60e4c40abb203e7a2628c1cb0a81d8fb482",
    ),  # 459540 B
    (
        "many-keys",
        "json:",
        "56face86c810991f81a23a99908f159ce15b070132bb5b265372b37ec58bd41f",
        "361030d6e17d25282d85fd3e0a691ad5512e7c577964df3b5d7a5ac28038e968",
    ),  # 420000 B
    (
        "large-utf16",
        "json:",
        "654f9ca3fec7aa0d6190ef72d7718dad3dace2b249872a0a3a1b9900dd948d11",
        "f7ddfc95919be3f91ef22f702e24b789a44eba7cbb910b1d614d0bc4c5b75954",
    ),  # 215014 B
    (
        "large-depth-128",
        "json:",
        "8522eec717d5a52e4e639429fdab133df31d9388410b6b20172541d0b26a52f3",
        "9b1fad1d464c59d54302158bd069738c3dcd5fb6a9d98b092decea214d8f2418",
    ),  # 100276 B
    (
        "large-depth-129",
        "raw:{",
        "caf7cecd031da10fc0049352b85db15313cdc3d97af06d9db2584743b750f23d",
        "2379f54a96a5f758051dc3c7f7d5a8c98f0aebbcdd21249df73ba47564abd253",
    ),  # 100278 B
    (
        "large-duplicate",
        "raw:{",
        "972361354874036788da637fd6760a5c4f7a20581d9e4469b0547843956f6b56",
        "80256557bc2a68ac2cb3964d5a63f11ae395a614c76e20839611e1ff37cf288e",
    ),  # 255322 B
    (
        "large-trailing-comma",
        "raw:{",
        "202503a324cbb71cb6323ba8edf6b23967d33535b416decfeb139503814582ae",
        "49b6eda91ccc54b90bb2a6ff4a409baa9cd6e1b9d266b60ae28d4a998de0ca68",
    ),  # 264444 B
    (
        "large-not-utf8",
        "raw:{",
        "e2a645fb3fb0718773d5169192793e7e38be5bbda08e1428dc25625d415c4b44",
        "0d16a945b29550922e6cfd4188b6cdf67e1c60f277ee510b034d485badf0c0b4",
    ),  # 259547 B
    (
        "large-exponent",
        "raw:[",
        "deae467990623d5fdf7410afaf6b10ef11da853ce998226d54e4072880689059",
        "cbb1635cc268aa0341b0e1c5cf6946a06b1942d1ffcf55b49aff2ed27b4388b8",
    ),  # 120023 B
    (
        "large-long-number",
        "json:",
        "31fcdd9571849a09f300bbaba9c1e1cf61083bf1f487fa6207a7910abf841139",
        "f0b4c8fadebc2726eb9f43b64a2c6300d559fbd6d247a4ed122442bf8a097673",
    ),  # 300008 B
]


def test_every_sample_is_pinned() -> None:
    assert [name for name, *_ in PINNED] == [name for name, *_ in SAMPLES]


@pytest.mark.parametrize(
    ("sample", "pinned"), list(zip(SAMPLES, PINNED, strict=True)), ids=lambda v: v[0]
)
def test_a_pinned_body_keeps_its_key(
    sample: tuple[str, bytes, tuple[str, ...]], pinned: tuple[str, str, str, str]
) -> None:
    _, body, rules = sample
    _, start, digest, key = pinned
    ignore = tuple(parse_ignore(rule) for rule in rules)
    normalized = parse_body(body, ignore).normalized
    assert normalized[:5].decode("latin-1") == start
    assert hashlib.sha256(normalized).hexdigest() == digest
    request = KeyRequest(
        method="POST",
        path="/v1/x",
        headers={"authorization": "Bearer sk-1"},
        body=body,
        ignore=ignore,
    )
    assert derive_key(request, SECRET) == key

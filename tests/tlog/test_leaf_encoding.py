"""Leaf bytes and personal digests are RFC 8785 exactly: the fast encoder they use
(kaireon_client.jcs) gives the reference implementation's bytes for any row."""

from __future__ import annotations

import hashlib

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from kaireon_client.tlog.leaf import personal_digest
from tests.provenance.test_jcs import values
from tests.tlog.support import make_leaf


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(st.text(), values, max_size=6),
    action=st.text(min_size=1, max_size=20).filter(str.isprintable),
    actor=st.text(min_size=1, max_size=20).filter(str.isprintable),
)
def test_leaf_bytes_are_the_reference_canonical_json(changes, action, actor):
    leaf = make_leaf("t_leaf", 7, changes=changes, action=action, actor=actor)
    assert leaf.canonical() == rfc8785.dumps(leaf.to_json())


@settings(max_examples=300, deadline=None)
@given(value=values, salt=st.text(max_size=40))
def test_a_personal_digest_is_sha256_of_salt_and_the_reference_bytes(value, salt):
    expected = hashlib.sha256(salt.encode() + rfc8785.dumps(value)).hexdigest()
    assert personal_digest(salt, value) == expected
